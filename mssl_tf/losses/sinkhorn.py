"""Sinkhorn-Knopp equal-partition assignment and top-K support selection, PsCo's pseudo-labelling
(Jang, Hwang, Shin & Kim, ICLR 2023; Sinkhorn iterations as in SwAV, Caron et al., NeurIPS 2020)."""

from __future__ import annotations

import tensorflow as tf


def sinkhorn(scores: tf.Tensor, epsilon: float = 0.05, iterations: int = 3) -> tf.Tensor:
    """Entropic optimal-transport assignment of N samples (rows) to M candidates (columns) in equal partition.

    Starting from A ∝ exp(scores/ε) (summing to 1), each iteration rescales the columns so that every candidate
    holds a mass 1/M, then the rows so that every sample holds 1/N. The result is multiplied by N: each row is a
    distribution over the candidates (sums to 1) and each column sums to N/M (exactly in the limit; after a few
    iterations approximately, the rows being normalized last). No gradient flows through it.

    Args:
        scores: `[N, M]` similarities (PsCo: momentum query features · queue features).
        epsilon: entropic regularization ε (smaller: closer to a hard assignment).
        iterations: Sinkhorn-Knopp iterations.

    Returns:
        `[N, M]` assignment.
    """
    scores = tf.stop_gradient(tf.cast(scores, tf.float32))
    samples = tf.cast(tf.shape(scores)[0], tf.float32)
    candidates = tf.cast(tf.shape(scores)[1], tf.float32)
    assignment = tf.exp((scores - tf.reduce_max(scores)) / epsilon)  # the shift cancels in the normalizations
    assignment /= tf.reduce_sum(assignment)
    for _ in range(iterations):
        assignment /= tf.reduce_sum(assignment, axis=0, keepdims=True) * candidates
        assignment /= tf.reduce_sum(assignment, axis=1, keepdims=True) * samples
    return assignment * samples


def top_assignments(assignment: tf.Tensor, shots: int) -> tf.Tensor:
    """The `shots` candidates with the largest assignment in each row → indices `[N, shots]`, best first."""
    return tf.math.top_k(assignment, k=shots, sorted=True).indices
