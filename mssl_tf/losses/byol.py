"""BYOL's regression loss (Grill et al., NeurIPS 2020)."""

from __future__ import annotations

import tensorflow as tf


def byol_loss(predictions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean over the batch of 2 − 2·cos(p, z): the squared distance of the L2-normalized vectors.

    The targets are stop-gradient (they come from the EMA target network).

    Args:
        predictions: `[N, dim]` online predictions p.
        targets: `[N, dim]` target projections z.

    Returns:
        Scalar loss in [0, 4].
    """
    p = tf.math.l2_normalize(predictions, axis=-1)
    z = tf.stop_gradient(tf.math.l2_normalize(targets, axis=-1))
    return tf.reduce_mean(2.0 - 2.0 * tf.reduce_sum(p * z, axis=-1))


def symmetric_byol_loss(predictions_a, targets_b, predictions_b, targets_a) -> tf.Tensor:
    """BYOL's symmetrized loss: view a predicts view b's target and b predicts a's (the two terms summed)."""
    return byol_loss(predictions_a, targets_b) + byol_loss(predictions_b, targets_a)
