"""The cross-entropy of transformation-prediction pretext tasks (e.g. rotation prediction, Gidaris et al. 2018)."""

from __future__ import annotations

import tensorflow as tf


def transformation_prediction_loss(transformations: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy of `logits [N, transformations]` against the applied transformation ids `[N]`."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(transformations, tf.int32), logits=logits)
    )
