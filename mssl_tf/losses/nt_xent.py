"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al., ICML 2020)."""

from __future__ import annotations

import tensorflow as tf

from mssl_tf.losses import replicas


def nt_xent(
    embeddings_a: tf.Tensor, embeddings_b: tf.Tensor, temperature: float = 0.1, gather: bool = True
) -> tf.Tensor:
    """Mean NT-Xent over the 2N anchors of N positive pairs.

    Every embedding is L2-normalized; the anchor `a_i` has the positive `b_i` and the 2N − 2 negatives
    {a_j, b_j : j ≠ i} (likewise for `b_i`):

        ℓ(a_i) = −log( exp(s(a_i, b_i)/τ) / Σ_{k ≠ a_i} exp(s(a_i, k)/τ) ),  s = cosine similarity.

    Args:
        embeddings_a: `[N, dim]` embeddings of the first view (this replica's rows).
        embeddings_b: `[N, dim]` embeddings of the second view, row i pairs with row i of `embeddings_a`.
        temperature: τ.
        gather: under a multi-replica strategy, draw negatives from the global batch (embeddings all-gathered
            across replicas); the loss is then the mean over this replica's anchors, and the mean over replicas
            equals the single-device loss of the global batch.

    Returns:
        Scalar loss.
    """
    a = tf.math.l2_normalize(embeddings_a, axis=-1)
    b = tf.math.l2_normalize(embeddings_b, axis=-1)
    local = tf.shape(a)[0]
    offset = tf.constant(0, tf.int32)
    all_a, all_b = a, b
    if gather:
        all_a, all_b = replicas.all_gather(a), replicas.all_gather(b)
        offset = replicas.replica_offset(local)
    total = tf.shape(all_a)[0]
    anchors = tf.concat([a, b], 0)  # [2n, dim]
    candidates = tf.concat([all_a, all_b], 0)  # [2N, dim]: rows 0..N-1 first views, N..2N-1 second views
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    rows = tf.range(local) + offset
    self_index = tf.concat([rows, rows + total], 0)
    positive_index = tf.concat([rows + total, rows], 0)
    logits -= 1e9 * tf.one_hot(self_index, 2 * total, dtype=logits.dtype)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_index, logits=logits))
