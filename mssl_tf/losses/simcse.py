"""The contrastive loss of SimCSE (Gao, Yao & Chen, EMNLP 2021): each sentence picks its own second encoding among
the second encodings of the (global) batch."""

from __future__ import annotations

import tensorflow as tf

from mssl_tf.losses import replicas


def in_batch_contrastive(first: tf.Tensor, second: tf.Tensor, temperature: float = 0.05,
                         gather: bool = True) -> tf.Tensor:
    """Mean over this replica's rows of

        ℓ_i = −log( exp(cos(h_i, h⁺_i)/τ) / Σ_j exp(cos(h_i, h⁺_j)/τ) ),

    j over every second encoding of the global batch (all-gathered across replicas when `gather`): one direction,
    as in the paper, so the positives' own first encodings are not negatives.

    Args:
        first: `[N, dim]` first encodings `h` (this replica's rows).
        second: `[N, dim]` second encodings `h⁺`, row i the positive of row i of `first`.
        temperature: τ (0.05 in the paper).

    Returns:
        Scalar loss; the mean over replicas equals the single-device loss of the global batch.
    """
    h = tf.math.l2_normalize(first, axis=-1)
    positives = tf.math.l2_normalize(second, axis=-1)
    candidates = replicas.all_gather(positives) if gather else positives
    offset = replicas.replica_offset(tf.shape(h)[0]) if gather else tf.constant(0, tf.int32)
    logits = tf.matmul(h, candidates, transpose_b=True) / temperature
    labels = tf.range(tf.shape(h)[0]) + offset
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
