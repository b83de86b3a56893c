"""Barlow Twins' redundancy-reduction loss (Zbontar et al., ICML 2021)."""

from __future__ import annotations

import tensorflow as tf

from mssl_tf.losses import replicas


def standardize(embeddings: tf.Tensor, epsilon: float = 1e-5, global_batch: bool = True) -> tf.Tensor:
    """Per-dimension (z − mean) / sqrt(var + ε) with the batch mean and (biased) variance.

    With `global_batch`, the statistics are those of the global batch: sums all-reduced across replicas.
    """
    reduce = replicas.all_reduce_sum if global_batch else (lambda value: value)
    count = reduce(tf.cast(tf.shape(embeddings)[0], embeddings.dtype))
    mean = reduce(tf.reduce_sum(embeddings, axis=0)) / count
    centered = embeddings - mean
    variance = reduce(tf.reduce_sum(tf.square(centered), axis=0)) / count
    return centered * tf.math.rsqrt(variance + epsilon)


def cross_correlation(embeddings_a, embeddings_b, epsilon: float = 1e-5, global_batch: bool = True) -> tf.Tensor:
    """`[dim, dim]` matrix C_ij = Σ_n â_ni b̂_nj / N of the standardized embeddings over the (global) batch."""
    a = standardize(embeddings_a, epsilon, global_batch)
    b = standardize(embeddings_b, epsilon, global_batch)
    reduce = replicas.all_reduce_sum if global_batch else (lambda value: value)
    count = reduce(tf.cast(tf.shape(a)[0], a.dtype))
    return reduce(tf.matmul(a, b, transpose_a=True)) / count


def barlow_twins_loss(
    embeddings_a: tf.Tensor,
    embeddings_b: tf.Tensor,
    redundancy_weight: float = 5e-3,
    epsilon: float = 1e-5,
    global_batch: bool = True,
) -> tf.Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij².

    The cross-correlation uses the global batch's statistics (`global_batch`, through the replica context), so
    every replica computes the same loss value: the single-device loss of the global batch. `SSLModel` scales
    each replica's loss by 1/replicas, and the all-reduces' gradients sum the replicas' upstream gradients, so
    the summed gradients equal the global-batch gradient (not replicas × it, the usual mistake).

    Args:
        embeddings_a: `[N, dim]` projections of the first view.
        embeddings_b: `[N, dim]` projections of the second view.
        redundancy_weight: λ, the weight of the off-diagonal terms.
        epsilon: variance floor of the standardization.
        global_batch: batch statistics over all replicas (True) or this replica's rows only.

    Returns:
        Scalar loss.
    """
    correlation = cross_correlation(embeddings_a, embeddings_b, epsilon, global_batch)
    diagonal = tf.linalg.diag_part(correlation)
    on_diagonal = tf.reduce_sum(tf.square(1.0 - diagonal))
    off_diagonal = tf.reduce_sum(tf.square(correlation)) - tf.reduce_sum(tf.square(diagonal))
    return on_diagonal + redundancy_weight * off_diagonal
