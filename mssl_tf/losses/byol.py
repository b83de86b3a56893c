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


def multi_view_byol_loss(predictions: tf.Tensor, targets: tf.Tensor, sources: tf.Tensor) -> tf.Tensor:
    """BYOL's loss over several views of each source: every view predicts the target of every other view of its
    source, 2 − 2·cos(p_i, z_j) averaged over the ordered pairs (i ≠ j, same source) and doubled, so that two views
    per source give `symmetric_byol_loss` exactly (its two terms summed).

    Args:
        predictions: `[V, dim]` online predictions, one row per view.
        targets: `[V, dim]` target projections (stop-gradient).
        sources: `[V]` int, which source (image, or class) each view is of; a source's lone view adds no pair.

    Returns:
        Scalar loss in [0, 4].
    """
    p = tf.math.l2_normalize(predictions, axis=-1)
    z = tf.stop_gradient(tf.math.l2_normalize(targets, axis=-1))
    same = tf.equal(sources[:, tf.newaxis], sources[tf.newaxis, :])
    pairs = tf.cast(tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(sources)[0], dtype=tf.bool))), p.dtype)
    distances = 2.0 - 2.0 * tf.matmul(p, z, transpose_b=True)
    return 2.0 * tf.reduce_sum(pairs * distances) / tf.reduce_sum(pairs)
