"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov, ICML 2015 Deep Learning Workshop)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel


def pair_scores(query_features, support_features, weights, bias):
    """Koch et al.'s verification logit for every (query, support) pair: `w · |f(q) − f(s)| + b` → `[q, s]`."""
    distances = tf.abs(query_features[:, tf.newaxis, :] - support_features[tf.newaxis, :, :])
    return tf.tensordot(distances, weights, axes=[[2], [0]]) + bias


def best_match_logits(scores, support_labels):
    """`[q, s]` pair scores → `[q, ways]`: each class scored by its best-matching support example."""
    ways = tf.reduce_max(support_labels) + 1
    return tf.transpose(tf.math.unsorted_segment_max(tf.transpose(scores), support_labels, ways))


def verification_loss(scores, support_labels, query_labels):
    """Mean binary cross-entropy of "same class?" over every (query, support) pair of the task."""
    same = tf.cast(tf.equal(query_labels[:, tf.newaxis], support_labels[tf.newaxis, :]), scores.dtype)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=same, logits=scores))


@keras.saving.register_keras_serializable(package="mssl_tf")
class SiameseNet(EpisodicModel):
    """Siamese verification network: trained on same/different pairs, one-shot by the best-matching support.

    Every (query, support) pair of an episode is a training pair (the paper samples pairs from alphabets; episodes
    give the same kind of pairs with a fixed same/different ratio of 1 : ways − 1). A query is classified as the
    class of the support example it most likely matches.

    Args:
        backbone: the shared twin encoder.
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        # === Layers ===
        # Koch et al.'s weighted L1 distance → logit. Equal negative weights to start with: an untrained model is
        # nearest-neighbour in L1 (a random-sign start scores near chance until it has trained).
        self.verifier = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(-1.0), name="verifier")
        self.verifier.build((None, backbone.output_shape[-1]))

    def meta_learn(self, task, training):
        support_count = tf.shape(task["support_images"])[0]
        features = self.backbone(tf.concat([task["support_images"], task["query_images"]], 0), training=training)
        support_labels = tf.cast(task["support_labels"], tf.int32)
        scores = pair_scores(features[support_count:], features[:support_count], self.verifier.kernel[:, 0],
                             self.verifier.bias[0])
        loss = verification_loss(scores, support_labels, tf.cast(task["query_labels"], tf.int32))
        return loss, best_match_logits(scores, support_labels)
