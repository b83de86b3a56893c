"""Reptile (Nichol, Achiam & Schulman 2018)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.base import replica_count
from mssl_tf.methods.episodic import task_cross_entropy
from mssl_tf.methods.maml import MAML


@keras.saving.register_keras_serializable(package="mssl_tf")
class Reptile(MAML):
    """Reptile: train on each task with plain SGD, then move the initialization towards the adapted weights.

    The outer update direction `theta - mean_t(phi_t)` is handed to the compiled optimizer as a gradient
    (SGD with learning rate 1 is the paper's update; Adam is a common variant). The inner loop trains on
    the whole task (support and query) and reports its query loss and accuracy after
    adaptation (optimistic: those queries were trained on); evaluation adapts on the support set only, like MAML, and shares
    MAML's batched inner loop.

    With `head="shared"` a task adapts N copies of the head (w, b); Reptile's target for w is the mean over tasks of
    the mean of its N adapted copies. Reptile moves θ towards the adapted weights φ; with the head replicated
    (W_0 = R w, R = N copies) the nearest initialization of that form is the least-squares projection of φ onto
    the replicated heads, argmin_w ||R w - φ||² = (RᵀR)⁻¹ Rᵀ φ = mean of the copies. (The gradient of
    ½||R w - φ||² would be the sum, N times the mean: a step whose size grew with the task's width.)
    Under cross-entropy every inner step moves the N copies by gradients that sum to zero (the p - y of each example
    sums to zero over the classes), so that mean stays w: like MAML's meta-gradient of w, Reptile's direction for w is
    zero, and the shared head works as a permutation-invariant start.

    Args: as `MAML`; `first_order` is implied.
    """

    def train_step(self, data):
        images = tf.concat([data["support_images"], data["query_images"]], axis=1)
        labels = tf.concat([data["support_labels"], data["query_labels"]], axis=1)
        fast, logits = self.adapt_tasks(images, labels, self.inner_steps, data["query_images"], first_order=True)
        directions = [
            (variable.value - tf.reduce_mean(self.adapted_target(variable, fast[variable.path]), axis=0))
            / replica_count()
            for variable in self.adapted_variables
        ]
        self.optimizer.apply_gradients(zip(directions, self.adapted_variables))
        return self.update_trackers(
            tf.reduce_mean(task_cross_entropy(data["query_labels"], logits)), logits, data["query_labels"]
        )

    def adapted_target(self, variable, adapted):
        """`adapted [tasks, *shape]` of `variable`, with a shared head's N copies (last axis) replaced by their mean."""
        if self.head == "shared" and variable.path in (self.classifier.kernel.path, self.classifier.bias.path):
            return tf.reduce_mean(adapted, axis=-1, keepdims=True)
        return adapted
