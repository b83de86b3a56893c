"""InfoNCE against a queue of negatives, the loss of MoCo (He et al., CVPR 2020; Chen et al. 2020, MoCo v2)."""

from __future__ import annotations

import tensorflow as tf


def infonce(queries: tf.Tensor, keys: tf.Tensor, queue: tf.Tensor, temperature: float = 0.2) -> tf.Tensor:
    """Mean cross-entropy of each query picking its own key among the key and the queue's negatives.

        ℓ(q_i) = −log( exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_m exp(q_i·n_m/τ)) ),

    with `q`, `k` and the queue rows `n_m` L2-normalized. No gradient flows to `keys` or `queue` (MoCo's keys
    come from the momentum encoder).

    Args:
        queries: `[N, dim]` query embeddings.
        keys: `[N, dim]` positive keys, row i pairs with query i.
        queue: `[K, dim]` negatives.
        temperature: τ.

    Returns:
        Scalar loss.
    """
    q = tf.math.l2_normalize(queries, axis=-1)
    k = tf.stop_gradient(tf.math.l2_normalize(keys, axis=-1))
    n = tf.stop_gradient(tf.math.l2_normalize(queue, axis=-1))
    positive = tf.reduce_sum(q * k, axis=-1, keepdims=True)
    logits = tf.concat([positive, tf.matmul(q, n, transpose_b=True)], axis=1) / temperature
    labels = tf.zeros(tf.shape(q)[:1], tf.int32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
