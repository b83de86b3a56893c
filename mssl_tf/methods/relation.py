"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel


def relation_pairs(query_features, class_features):
    """Every (query, class) pair's concatenated features `[q, ways, 2·d]` (the relation module's input)."""
    queries, ways = tf.shape(query_features)[0], tf.shape(class_features)[0]
    left = tf.broadcast_to(query_features[:, tf.newaxis, :], [queries, ways, query_features.shape[-1]])
    right = tf.broadcast_to(class_features[tf.newaxis, :, :], [queries, ways, class_features.shape[-1]])
    return tf.concat([left, right], axis=-1)


def relation_loss(scores, query_labels):
    """Sung et al.'s objective: mean squared error of the relation scores (in [0, 1]) against one-hot targets."""
    targets = tf.one_hot(query_labels, tf.shape(scores)[-1], dtype=scores.dtype)
    return tf.reduce_mean(tf.square(scores - targets))


@keras.saving.register_keras_serializable(package="mssl_tf")
class RelationNet(EpisodicModel):
    """Relation Network: a learned relation module scores each (query, class) pair.

    Each class is represented by the sum of its support embeddings (the paper's choice for K-shot); the relation
    module sees the query's and the class's features side by side and emits a score in [0, 1], trained by mean
    squared error against "same class". Sung et al. apply the module to convolutional feature maps; here it is an
    MLP on the backbone's feature vectors, so it works on any registered backbone.

    Args:
        backbone: image encoder.
        hidden_units: widths of the relation module's hidden layers (the paper's module ends in an 8-unit layer).
    """

    def __init__(self, backbone, hidden_units=(64, 8), **kwargs):
        super().__init__(backbone, **kwargs)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        # === Layers ===
        self.relation_module = keras.Sequential(
            [keras.layers.Dense(units, activation="relu") for units in self.hidden_units]
            + [keras.layers.Dense(1, activation="sigmoid")], name="relation_module")
        self.relation_module.build((None, 2 * backbone.output_shape[-1]))

    def relation_scores(self, support_features, support_labels, query_features):
        ways = tf.reduce_max(support_labels) + 1
        class_features = tf.math.unsorted_segment_sum(support_features, support_labels, ways)
        pairs = relation_pairs(query_features, class_features)
        dim = pairs.shape[-1]
        return tf.reshape(self.relation_module(tf.reshape(pairs, [-1, dim])), tf.shape(pairs)[:2])

    def meta_learn(self, task, training):
        support_count = tf.shape(task["support_images"])[0]
        features = self.backbone(tf.concat([task["support_images"], task["query_images"]], 0), training=training)
        scores = self.relation_scores(features[:support_count], tf.cast(task["support_labels"], tf.int32),
                                      features[support_count:])
        return relation_loss(scores, tf.cast(task["query_labels"], tf.int32)), scores

    # === Config ===
    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}
