"""BYOL and Prototypical Networks trained jointly: one encoder, both losses, every step (issue 13's combination)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import prediction_head, projection_head
from mssl_tf.losses import multi_view_byol_loss
from mssl_tf.methods.base import replica_count
from mssl_tf.methods.episodic import TASK_KEYS, task_cross_entropy
from mssl_tf.methods.protonet import ProtoNet, prototype_logits
from mssl_tf.methods.ssl.base import frozen_copy, moving_average_pairs, update_moving_average
from mssl_tf.methods.ssl.byol import target_decay


@keras.saving.register_keras_serializable(package="mssl_tf")
class BYOLProtoNet(ProtoNet):
    """ProtoNet whose encoder also learns BYOL's bootstrap regression, from the same tasks' views, in one step.

    On augmentation-made tasks (`--tasks augmentation`) each class is one unlabeled image and its shots and queries
    are independent augmented views of it, so a task is both an N-way episode and a multi-view batch of N images.
    One forward pass of the task's images through the shared backbone feeds both losses:

        loss = ProtoNet's query cross-entropy + byol_weight · BYOL's loss over the task's views,

    the BYOL term being `multi_view_byol_loss`: each view's online prediction (predictor ∘ projector ∘ backbone)
    regresses the EMA target network's projection of every other view of its class (with 1 shot and 1 query, BYOL's
    symmetrized two-view loss exactly). Gradients of both terms reach the backbone; the projector and predictor learn
    from BYOL's term only. The target network (backbone and projector) follows the online one by BYOL's EMA with its
    cosine schedule, updated once per optimizer step (at its start, as `BYOL`).

    Distribution: everything is computed per task, and a task lives whole on one replica (the meta-batch is split
    by tasks), so the heads' batch norm uses the task's statistics (not synchronized across replicas, unlike BYOL's
    global-batch heads): an R-replica step equals the single-device step, as for every episodic method. The sum is
    scaled by 1/replicas before the gradient, like `EpisodicModel.train_step`.

    Evaluation, `mssl-tf eval` and the exported `few_shot` signature are ProtoNet's (nearest prototype of backbone
    features); the heads and the target network serve training only.

    Args:
        backbone: images → features.
        byol_weight: weight of the BYOL term (0: ProtoNet, at the cost of the unused heads).
        base_decay: τ_base of the target's EMA (BYOL's schedule from τ_base to 1 over `total_steps`).
        total_steps: K, the run's planned optimizer steps (set by `mssl-tf train` from `--steps`).
        hidden_units: hidden widths of the projector and of the predictor (batch norm, ReLU).
        projection_units: projection (and prediction) width.
    """

    RUN_ARGUMENTS = ("total_steps",)

    def __init__(self, backbone, byol_weight=1.0, base_decay=0.99, total_steps=1000, hidden_units=(512,),
                 projection_units=128, **kwargs):
        super().__init__(backbone, **kwargs)
        self.byol_weight = float(byol_weight)
        self.base_decay = float(base_decay)
        self.total_steps = int(total_steps)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units = int(projection_units)
        feature_dim = int(backbone.output_shape[-1])
        # === Layers ===
        self.projector = projection_head(feature_dim, self.hidden_units, self.projection_units, synchronized=False)
        self.predictor = prediction_head(self.projection_units, self.hidden_units, synchronized=False)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector, feature_dim)
        self.target_pairs = moving_average_pairs(
            [self.backbone, self.projector], [self.target_backbone, self.target_projector]
        )
        self.episodic_loss_tracker = keras.metrics.Mean(name="episodic_loss")
        self.byol_loss_tracker = keras.metrics.Mean(name="byol_loss")

    @property
    def metrics(self):
        return [*super().metrics, self.episodic_loss_tracker, self.byol_loss_tracker]

    def decay(self):
        return target_decay(self.base_decay, self.optimizer.iterations, self.total_steps)

    def task_losses(self, task: dict, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One task → (ProtoNet's query loss, BYOL's loss over its views, query logits), from one forward pass."""
        support_count = tf.shape(task["support_images"])[0]
        images = tf.concat([task["support_images"], task["query_images"]], 0)
        features = self.backbone(images, training=training)
        logits = prototype_logits(features[:support_count], task["support_labels"], features[support_count:])
        episodic = task_cross_entropy(task["query_labels"], logits)
        predictions = self.predictor(self.projector(features, training=training), training=training)
        targets = tf.stop_gradient(
            self.target_projector(self.target_backbone(images, training=training), training=training)
        )
        classes = tf.concat([task["support_labels"], task["query_labels"]], 0)
        return episodic, multi_view_byol_loss(predictions, targets, classes), logits

    def train_step(self, data):
        update_moving_average(self.target_pairs, self.decay())
        tasks = data["support_images"].shape[0]
        with tf.GradientTape() as tape:
            results = [self.task_losses({key: data[key][index] for key in TASK_KEYS}, training=True)
                       for index in range(tasks)]
            episodic = tf.reduce_mean(tf.stack([result[0] for result in results]))
            byol = tf.reduce_mean(tf.stack([result[1] for result in results]))
            loss = episodic + self.byol_weight * byol
            scaled_loss = loss / replica_count()
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.episodic_loss_tracker.update_state(episodic)
        self.byol_loss_tracker.update_state(byol)
        return self.update_trackers(loss, tf.stack([result[2] for result in results]), data["query_labels"])

    # === Config ===
    def get_config(self):
        return {**super().get_config(), "byol_weight": self.byol_weight, "base_decay": self.base_decay,
                "total_steps": self.total_steps, "hidden_units": list(self.hidden_units),
                "projection_units": self.projection_units}
