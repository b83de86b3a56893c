"""MoCo v2: momentum contrast with a queue of negatives (He et al., CVPR 2020; Chen, Fan, Girshick & He, 2020)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import projection_head
from mssl_tf.losses import infonce, replicas
from mssl_tf.methods.base import replica_count
from mssl_tf.methods.ssl.base import SSLModel, frozen_copy, moving_average_pairs, update_moving_average


@keras.saving.register_keras_serializable(package="mssl_tf")
class MoCo(SSLModel):
    """Queries from the online encoder, keys from an EMA key encoder, negatives from a queue of past keys.

    Guard against batch-norm leakage (shuffled BN): batch norm sees `batch_norm_groups` fixed, contiguous groups
    of the global batch (as MoCo's per-GPU batch norm over 8 GPUs). Queries are encoded group by group; keys are
    encoded after a random permutation of the global batch (images all-gathered across replicas, the same
    permutation on every replica, keyed by (seed, step)) and un-permuted afterwards, so a query and its positive
    key never share batch statistics. With R replicas each replica encodes `batch_norm_groups / R` groups of its
    rows, which makes an R-replica step the same computation as the single-device step. The projection MLP has
    no batch norm (MoCo v2's head: fc, ReLU, fc).

    The queue is a FIFO of the last `queue_size` keys of the global batch (all-gathered), initialized with random
    unit vectors.

    Args:
        backbone: images → features (its batch norm must be the per-call kind for the groups to mean anything).
        temperature: τ of InfoNCE.
        momentum: EMA decay of the key encoder.
        queue_size: number of negatives.
        batch_norm_groups: batch-norm groups of the global batch (a multiple of the replica count).
        hidden_units: hidden widths of the projection MLP.
        projection_units: projection width.
        seed: seed of the key-batch permutations.
        probe_classes: classes of the online linear probe (0: none).
    """

    PROJECTOR_OPTIONS = {"batch_norm": False}  # MLPHead options of the projector (subclasses may differ)

    def __init__(self, backbone, temperature=0.2, momentum=0.99, queue_size=4096, batch_norm_groups=4,
                 hidden_units=(256,), projection_units=128, seed=0, probe_classes=0, **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.queue_size, self.batch_norm_groups = int(queue_size), int(batch_norm_groups)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units, self.seed = int(projection_units), int(seed)
        self.projector = projection_head(self.feature_dim, self.hidden_units, self.projection_units,
                                         **self.PROJECTOR_OPTIONS)
        self.key_backbone = frozen_copy(self.backbone, prefix="key_")
        self.key_projector = frozen_copy(self.projector, self.feature_dim, prefix="key_")
        self.key_pairs = moving_average_pairs([self.backbone, self.projector], [self.key_backbone, self.key_projector])
        self.queue = self.add_weight(shape=(self.queue_size, self.projection_units), name="queue", trainable=False,
                                     initializer=keras.initializers.RandomNormal(seed=self.seed))

    def encode_in_groups(self, backbone, projector, images, training):
        groups = self.batch_norm_groups // replica_count()
        if groups * replica_count() != self.batch_norm_groups:
            raise ValueError(f"batch_norm_groups={self.batch_norm_groups} must be a multiple of the "
                             f"{replica_count()} replicas")
        if images.shape[0] is not None and images.shape[0] % groups:
            raise ValueError(f"This replica's batch of {images.shape[0]} images does not split into "
                             f"{groups} batch-norm groups; choose a batch size divisible by batch_norm_groups="
                             f"{self.batch_norm_groups}")
        chunks = tf.split(images, groups) if groups > 1 else [images]
        features = tf.concat([backbone(chunk, training=training) for chunk in chunks], 0)
        return features, projector(features, training=training)

    def shuffled_keys(self, images, training):
        local = tf.shape(images)[0]
        everything = replicas.all_gather(images)
        step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        permutation = tf.argsort(tf.random.stateless_uniform(tf.shape(everything)[:1], step_seed))
        offset = replicas.replica_offset(local)
        mine = tf.gather(everything, permutation[offset : offset + local])
        _, keys = self.encode_in_groups(self.key_backbone, self.key_projector, mine, training)
        all_keys = tf.gather(replicas.all_gather(keys), tf.argsort(permutation))  # un-permuted global keys
        return tf.stop_gradient(all_keys[offset : offset + local]), tf.stop_gradient(all_keys)

    def compute_ssl_loss(self, views, training):
        if training:
            update_moving_average(self.key_pairs, self.momentum)
        features, queries = self.encode_in_groups(self.backbone, self.projector, views[0], training)
        keys, all_keys = self.shuffled_keys(views[1], training)
        loss = infonce(queries, keys, self.queue, self.temperature)
        if training:
            self.enqueue(all_keys)
        return loss, features

    def enqueue(self, all_keys):
        """Pushes the global batch's L2-normalized keys at the front of the queue, dropping the oldest."""
        normalized = tf.math.l2_normalize(all_keys, axis=-1)
        self.queue.assign(tf.concat([normalized, self.queue[: self.queue_size - tf.shape(all_keys)[0]]], 0))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "momentum": self.momentum,
                "queue_size": self.queue_size, "batch_norm_groups": self.batch_norm_groups,
                "hidden_units": list(self.hidden_units), "projection_units": self.projection_units,
                "seed": self.seed}
