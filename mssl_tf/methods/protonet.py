"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel, task_cross_entropy


def prototype_logits(support_embeddings, support_labels, query_embeddings):
    """Negative squared Euclidean distances from each query to each class mean.

    Args:
        support_embeddings: `[support, dim]`.
        support_labels: `[support]` int, classes 0..ways-1.
        query_embeddings: `[queries, dim]`.

    Returns:
        logits `[queries, ways]`.
    """
    ways = tf.reduce_max(support_labels) + 1
    prototypes = tf.math.unsorted_segment_mean(support_embeddings, support_labels, ways)
    return -squared_distances(query_embeddings, prototypes)


def squared_distances(a, b):
    """`[n, d]`, `[m, d]` → `[n, m]` squared Euclidean distances (computed by expansion, clipped at 0)."""
    distances = (
        tf.reduce_sum(a * a, axis=-1, keepdims=True)
        - 2.0 * tf.matmul(a, b, transpose_b=True)
        + tf.reduce_sum(b * b, axis=-1)[tf.newaxis, :]
    )
    return tf.maximum(distances, 0.0)


@keras.saving.register_keras_serializable(package="mssl_tf")
class ProtoNet(EpisodicModel):
    """Prototypical Networks: classify queries by the nearest class prototype (mean support embedding).

    Training ways may exceed test ways (Snell et al. train 60-way for 5- and 20-way tests).

    Example:
        >>> model = ProtoNet(mssl_tf.backbones.conv4())
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(episode_dataset(train_images, EpisodeSpec(60, 5, 5)), steps_per_epoch=100)
    """

    def meta_learn(self, task, training):
        support_count = tf.shape(task["support_images"])[0]
        embeddings = self.backbone(tf.concat([task["support_images"], task["query_images"]], 0), training=training)
        logits = prototype_logits(embeddings[:support_count], task["support_labels"], embeddings[support_count:])
        return task_cross_entropy(task["query_labels"], logits), logits
