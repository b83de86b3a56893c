"""Heads: projection and prediction MLPs of self-supervised methods."""

from mssl_tf.heads.mlp import MLPHead, prediction_head, projection_head

__all__ = ["MLPHead", "prediction_head", "projection_head"]
