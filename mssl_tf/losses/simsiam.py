"""SimSiam's loss (Chen & He, CVPR 2021)."""

from __future__ import annotations

import tensorflow as tf


def negative_cosine(predictions: tf.Tensor, projections: tf.Tensor) -> tf.Tensor:
    """D(p, z) = −mean cos(p, stop_gradient(z)) over the batch."""
    p = tf.math.l2_normalize(predictions, axis=-1)
    z = tf.stop_gradient(tf.math.l2_normalize(projections, axis=-1))
    return -tf.reduce_mean(tf.reduce_sum(p * z, axis=-1))


def simsiam_loss(predictions_a, projections_a, predictions_b, projections_b) -> tf.Tensor:
    """½ D(p_a, z_b) + ½ D(p_b, z_a); minimum −1."""
    return 0.5 * negative_cosine(predictions_a, projections_b) + 0.5 * negative_cosine(predictions_b, projections_a)
