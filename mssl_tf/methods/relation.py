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


CLASS_POOLINGS = {"mean": tf.math.unsorted_segment_mean, "sum": tf.math.unsorted_segment_sum}


def pooled_class_features(support_features, support_labels, pooling="mean"):
    """Each class's support features `[ways, d]`, pooled by `pooling`: "mean" (any shot count, the same scale) or
    "sum" (Sung et al.: K shots give K times the 1-shot scale). `ways` is `max(support_labels) + 1`."""
    ways = tf.reduce_max(support_labels) + 1
    return CLASS_POOLINGS[pooling](support_features, support_labels, ways)


def relation_loss(scores, query_labels):
    """Sung et al.'s objective: mean squared error of the relation scores (in [0, 1]) against one-hot targets."""
    targets = tf.one_hot(query_labels, tf.shape(scores)[-1], dtype=scores.dtype)
    return tf.reduce_mean(tf.square(scores - targets))


@keras.saving.register_keras_serializable(package="mssl_tf")
class RelationNet(EpisodicModel):
    """Relation Network: a learned relation module scores each (query, class) pair.

    Each class is represented by its pooled support embeddings; the relation module sees the query's and the class's
    features side by side and emits a score in [0, 1], trained by mean squared error against "same class". Sung et
    al. apply the module to convolutional feature maps; here it is an MLP on the backbone's feature vectors, so it
    works on any registered backbone.

    Class pooling: Sung et al. *sum* a class's K support embeddings and train one model per shot count. A model
    trained on sums of 1 then sees inputs K times larger at K shots, which it was never trained on (a 60-way 1-shot
    model: 96.76% at 5-way 1-shot, 26.10% at 5-way 5-shot, benchmarks/README.md). The default here is the *mean*:
    one model serves any shot count, and a served support set with unequal counts per class does not favour the
    class with more examples. At a fixed shot count K the two differ by the factor K, which the module's first
    (linear) layer can absorb, so training and testing at one K loses nothing but the paper's initial scale;
    `class_pooling="sum"` is the paper's rule, for reproducing it. Models saved before this option existed summed,
    and load with "sum".

    Args:
        backbone: image encoder.
        hidden_units: widths of the relation module's hidden layers (the paper's module ends in an 8-unit layer).
        class_pooling: "mean" (default: any shot count) or "sum" (Sung et al.) of a class's support embeddings.
    """

    def __init__(self, backbone, hidden_units=(64, 8), class_pooling="mean", **kwargs):
        super().__init__(backbone, **kwargs)
        if class_pooling not in CLASS_POOLINGS:
            raise ValueError(f"class_pooling must be one of {sorted(CLASS_POOLINGS)}, got {class_pooling!r}")
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.class_pooling = str(class_pooling)
        # === Layers ===
        self.relation_module = keras.Sequential(
            [keras.layers.Dense(units, activation="relu") for units in self.hidden_units]
            + [keras.layers.Dense(1, activation="sigmoid")], name="relation_module")
        self.relation_module.build((None, 2 * backbone.output_shape[-1]))

    def relation_scores(self, support_features, support_labels, query_features):
        class_features = pooled_class_features(support_features, support_labels, self.class_pooling)
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
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "class_pooling": self.class_pooling}

    @classmethod
    def from_config(cls, config):
        return super().from_config({"class_pooling": "sum", **config})  # saved before the option: they summed
