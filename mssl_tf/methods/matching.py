"""Matching Networks (Vinyals et al., NeurIPS 2016)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel


def matching_log_probabilities(support_embeddings, support_labels, query_embeddings, scale=1.0):
    """Log of p(y|x) = sum_i a(x, x_i) 1[y_i = y], a = softmax over support of scale * cosine similarity.

    Returns:
        `[queries, ways]` log-probabilities (a valid logits tensor: its softmax is p itself).
    """
    ways = tf.reduce_max(support_labels) + 1
    similarity = tf.matmul(
        tf.math.l2_normalize(query_embeddings, axis=-1), tf.math.l2_normalize(support_embeddings, axis=-1),
        transpose_b=True,
    )
    attention = tf.nn.softmax(scale * similarity, axis=-1)
    probabilities = tf.matmul(attention, tf.one_hot(support_labels, ways, dtype=attention.dtype))
    return tf.math.log(probabilities + 1e-8)


@keras.saving.register_keras_serializable(package="mssl_tf")
class MatchingNet(EpisodicModel):
    """Matching Networks: attention over the support set with cosine similarity.

    Args:
        backbone: image encoder.
        full_context_embeddings: embed the support set with a bidirectional LSTM (g) and the queries with an
            attention LSTM over the support set (f), after Vinyals et al. 2016, section 2.1.2 (the LSTM
            reads the query embedding concatenated with its attention readout).
        processing_steps: unrolled steps of the attention LSTM.
        scale: multiplies cosine similarities before the softmax (1.0 in the paper).
    """

    def __init__(self, backbone, full_context_embeddings=False, processing_steps=3, scale=1.0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.full_context_embeddings = bool(full_context_embeddings)
        self.processing_steps = int(processing_steps)
        self.scale = float(scale)
        if self.full_context_embeddings:
            dim = backbone.output_shape[-1]
            self.support_lstm = keras.layers.Bidirectional(
                keras.layers.LSTM(dim // 2 if dim % 2 == 0 else dim, return_sequences=True), merge_mode="concat"
            )
            self.support_projection = keras.layers.Dense(dim, use_bias=False)
            self.query_cell = keras.layers.LSTMCell(dim)
            # Built now so that loading a saved model restores their weights.
            self.support_lstm.build((1, None, dim))
            self.support_projection.build((None, 2 * self.support_lstm.forward_layer.units))
            self.query_cell.build((None, 2 * dim))

    def contextual_embeddings(self, support, query):
        if not self.full_context_embeddings:
            return support, query
        support = support + self.support_projection(self.support_lstm(support[tf.newaxis]))[0]
        hidden, cell = query, tf.zeros_like(query)
        for _ in range(self.processing_steps):
            attention = tf.nn.softmax(tf.matmul(hidden, support, transpose_b=True), axis=-1)
            readout = tf.matmul(attention, support)
            output, (_, cell) = self.query_cell(tf.concat([query, readout], -1), [hidden, cell])
            hidden = output + query
        return support, hidden

    def meta_learn(self, task, training):
        support_count = tf.shape(task["support_images"])[0]
        embeddings = self.backbone(tf.concat([task["support_images"], task["query_images"]], 0), training=training)
        support, query = self.contextual_embeddings(embeddings[:support_count], embeddings[support_count:])
        logits = matching_log_probabilities(support, task["support_labels"], query, self.scale)
        loss = -tf.reduce_mean(tf.gather(logits, task["query_labels"], batch_dims=1))
        return loss, logits

    def get_config(self):
        config = super().get_config()
        config.update(
            full_context_embeddings=self.full_context_embeddings,
            processing_steps=self.processing_steps,
            scale=self.scale,
        )
        return config
