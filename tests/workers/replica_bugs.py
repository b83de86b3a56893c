"""Deliberately broken distributed steps: the negative controls of the replica and multi-worker equivalence checks.

Each class is correct on one device and wrong under several replicas, which is what an equivalence check must be
able to tell (tests/test_mirrored.py, tests/test_meta_ssl_mirrored.py, tests/test_multiworker.py). Imported only by
the step scripts, after they configure their devices.
"""

import keras
import tensorflow as tf

from mssl_tf.methods import IMAML, MAML, ProtoNet, Reptile, Versa
from mssl_tf.methods.episodic import task_cross_entropy
from mssl_tf.methods.meta_ssl import BYOLProtoNet, HyperNetwork, MemoryNetwork


class UnscaledLoss:
    """`EpisodicModel.train_step` without the 1/replicas loss scaling.

    The optimizer sums the replicas' gradients, so with 2 replicas the step is twice the single-device step.
    """

    def train_step(self, data):
        with tf.GradientTape() as tape:
            losses, logits = self.meta_batch_learn(data, training=True)
            loss = tf.reduce_mean(losses)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self.update_trackers(loss, logits, data["query_labels"])


class ProtoNetUnscaledLoss(UnscaledLoss, ProtoNet):
    pass


class MAMLUnscaledLoss(UnscaledLoss, MAML):
    pass


class MemoryNetworkUnscaledLoss(UnscaledLoss, MemoryNetwork):
    pass


class HyperNetworkUnscaledLoss(UnscaledLoss, HyperNetwork):
    pass


class ReptileUnscaledDirection(Reptile):
    """Reptile whose outer direction θ − mean φ is not divided by the replica count: summed over 2 replicas, it
    moves θ by the sum of the replicas' task means instead of the mean over all tasks."""

    def train_step(self, data):
        images = tf.concat([data["support_images"], data["query_images"]], axis=1)
        labels = tf.concat([data["support_labels"], data["query_labels"]], axis=1)
        fast, logits = self.adapt_tasks(images, labels, self.inner_steps, data["query_images"], first_order=True)
        directions = [variable.value - tf.reduce_mean(fast[variable.path], axis=0) for variable in self.adapted_variables]
        self.optimizer.apply_gradients(zip(directions, self.adapted_variables))
        return self.update_trackers(
            tf.reduce_mean(task_cross_entropy(data["query_labels"], logits)), logits, data["query_labels"]
        )


class IMAMLUnscaledGradient(IMAML):
    """iMAML whose implicit meta-gradient is not divided by the replica count: summed over 2 replicas, the step is
    the sum of the replicas' task means instead of the mean over all tasks."""

    def train_step(self, data):
        gradients, logits = self.meta_gradients(data)
        self.optimizer.apply_gradients(zip(gradients, self.adapted_variables))
        return self.update_trackers(
            tf.reduce_mean(task_cross_entropy(data["query_labels"], logits)), logits, data["query_labels"]
        )


class VersaLocalNoise(Versa):
    """VERSA whose training noise is indexed by the task's place on its replica, not in the global meta-batch:
    the second replica's tasks draw the first tasks' noise, so the sampled classifiers differ from one device's."""

    def first_task_index(self, tasks):
        return 0


class BYOLProtoNetGlobalHeadStatistics(BYOLProtoNet):
    """BYOL + ProtoNet whose heads' batch norm is synchronized across replicas, as BYOL's own heads are: with one task
    per replica the statistics mix the replicas' tasks, whereas on one device each task's heads see its own."""

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        for head in (self.projector, self.predictor, self.target_projector):
            for layer in head.stack:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
