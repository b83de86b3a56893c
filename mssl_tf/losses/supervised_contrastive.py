"""Supervised contrastive loss of queries against a labelled support set (Khosla et al., NeurIPS 2020), in the
few-shot form of PsCo (Jang, Hwang, Shin & Kim, ICLR 2023)."""

from __future__ import annotations

import tensorflow as tf


def supervised_contrastive(
    queries: tf.Tensor,
    query_labels: tf.Tensor,
    support: tf.Tensor,
    support_labels: tf.Tensor,
    temperature: float = 1.0,
) -> tf.Tensor:
    """Mean over queries of −(1/|P(i)|) Σ_{s ∈ P(i)} log( exp(q_i·s/τ) / Σ_{s' ∈ support} exp(q_i·s'/τ) ).

    P(i) are the support rows with the query's label; every other support row is a negative. Equivalently
    ℓ_i = logsumexp_s(q_i·s/τ) − q_i·c_i/τ with c_i the mean of the query's positive support rows (PsCo's
    prototype). Queries and support rows are L2-normalized; no gradient flows to the support (momentum features).

    Args:
        queries: `[n, dim]` query embeddings.
        query_labels: `[n]` int labels of the queries.
        support: `[m, dim]` support embeddings.
        support_labels: `[m]` int labels; every query's label must occur in the support.
        temperature: τ.

    Returns:
        Scalar loss.
    """
    q = tf.math.l2_normalize(queries, axis=-1)
    s = tf.stop_gradient(tf.math.l2_normalize(support, axis=-1))
    logits = tf.matmul(q, s, transpose_b=True) / temperature
    positives = tf.cast(tf.equal(query_labels[:, tf.newaxis], support_labels[tf.newaxis, :]), logits.dtype)
    positive_mean = tf.reduce_sum(positives * logits, axis=1) / tf.reduce_sum(positives, axis=1)
    return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - positive_mean)
