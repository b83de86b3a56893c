"""`SSLModel`: the shared base of self-supervised methods trained on batches of augmented views."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.base import BackboneModel, replica_count
from mssl_tf.methods.episodic import TASK_KEYS, task_cross_entropy
from mssl_tf.methods.protonet import prototype_logits


@keras.saving.register_keras_serializable(package="mssl_tf")
class SSLModel(BackboneModel):
    """Base of self-supervised methods.

    A batch is a dict from `mssl_tf.data.views.multi_view_dataset`: `views [batch, views, H, W, C]` and, only for
    the online probe, `labels [batch]`. `train_step` owns the tape: it calls the one hook
    `compute_ssl_loss(views, training)`, adds the online linear probe's loss when the batch carries labels and the
    model has a probe, scales the sum by 1/replicas (the optimizer sums gradients over replicas; losses that need
    the global batch gather or all-reduce through the replica context, see `mssl_tf.losses.replicas`) and applies
    the gradients.

    The probe is a linear classifier on stop-gradient backbone features: it reports how linearly separable the
    features are during training, and its gradient never reaches the encoder.

    Calling the model maps images to backbone features. `meta_batch_learn` classifies few-shot episodes by the
    nearest prototype of the frozen backbone's features, so `mssl_tf.evaluation.evaluate`, `mssl-tf eval` and the
    training's validation curve score SSL encoders exactly like metric meta-learners.

    Args:
        backbone: functional model mapping images to feature vectors.
        probe_classes: classes of the online linear probe (0: no probe; keep 0 for "no labels in training").
    """

    BATCHES = "views"
    RUN_ARGUMENTS = ("probe_classes",)

    def __init__(self, backbone: keras.Model, probe_classes: int = 0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.probe_classes = int(probe_classes)
        self.feature_dim = int(backbone.output_shape[-1])
        self.probe = None
        if self.probe_classes:
            # Zero initial weights (a convex problem needs no random start): adding the probe draws no random
            # numbers, so the encoder initializes exactly as without it.
            self.probe = keras.layers.Dense(self.probe_classes, kernel_initializer="zeros", name="probe")
            self.probe.build((None, self.feature_dim))
        self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
        self.probe_accuracy_tracker = keras.metrics.Mean(name="probe_accuracy")
        # Subclasses build every layer in their constructor, so `fit` under a strategy never builds lazily.
        self.built = True

    @property
    def metrics(self):
        probe = [self.probe_loss_tracker, self.probe_accuracy_tracker] if self.probe is not None else []
        return [self.loss_tracker, *probe]

    # === Hook ===
    def compute_ssl_loss(self, views: list[tf.Tensor], training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Views (a list of `[batch, H, W, C]`, this replica's rows) → (SSL loss of this replica's rows,
        backbone features `[batch, dim]` of the first view, for the probe)."""
        raise NotImplementedError

    # === Keras steps ===
    def train_step(self, data):
        views = tf.unstack(data["views"], axis=1)
        labels = data.get("labels")
        with tf.GradientTape() as tape:
            loss, features = self.compute_ssl_loss(views, training=True)
            total = loss
            if self.probe is not None and labels is not None:
                probe_loss, probe_logits = self.probe_loss(features, labels)
                total += probe_loss
            scaled_loss = total / replica_count()
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        if self.probe is not None and labels is not None:
            self.update_probe_trackers(probe_loss, probe_logits, labels)
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, data):
        views = tf.unstack(data["views"], axis=1)
        loss, features = self.compute_ssl_loss(views, training=False)
        self.loss_tracker.update_state(loss)
        if self.probe is not None and data.get("labels") is not None:
            self.update_probe_trackers(*self.probe_loss(features, data["labels"]), data["labels"])
        return {metric.name: metric.result() for metric in self.metrics}

    def probe_loss(self, features, labels):
        logits = self.probe(tf.stop_gradient(features))
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)
        )
        return loss, logits

    def update_probe_trackers(self, loss, logits, labels):
        self.probe_loss_tracker.update_state(loss)
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
        self.probe_accuracy_tracker.update_state(tf.reduce_mean(tf.cast(correct, tf.float32)))

    # === Few-shot evaluation of the frozen encoder ===
    def meta_batch_learn(self, batch: dict, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Nearest prototype on frozen backbone features (inference mode) → (query losses `[tasks]`, logits)."""
        support_images, support_labels, query_images, query_labels = (batch[key] for key in TASK_KEYS)
        tasks, support, queries = support_images.shape[0], support_images.shape[1], query_images.shape[1]
        images = tf.concat([support_images, query_images], axis=1)
        features = self.backbone(tf.reshape(images, [-1, *images.shape[2:]]), training=False)
        features = tf.stop_gradient(tf.reshape(features, [tasks, support + queries, -1]))
        logits = tf.stack([
            prototype_logits(features[task, :support], support_labels[task], features[task, support:])
            for task in range(tasks)
        ])
        return task_cross_entropy(query_labels, logits), logits

    def few_shot_logits(self, support_images, support_labels, query_images) -> tf.Tensor:
        """One task of any size: nearest prototype on frozen features, as `meta_batch_learn` scores it."""
        support = tf.shape(support_images)[0]
        features = self.backbone(tf.concat([support_images, query_images], axis=0), training=False)
        return prototype_logits(features[:support], support_labels, features[support:])

    # === Config ===
    def get_config(self):
        return {**super().get_config(), "probe_classes": self.probe_classes}


def frozen_copy(layer, input_dim: int | None = None, prefix: str = "target_"):
    """A non-trainable copy of `layer` (a functional model or a built layer) with the same weights."""
    config = {**layer.get_config(), "name": prefix + layer.name}
    copy = type(layer).from_config(config)
    if not copy.built:
        copy.build((None, input_dim))
    copy.set_weights(layer.get_weights())
    copy.trainable = False
    return copy


def moving_average_pairs(online_layers, target_layers) -> list[tuple]:
    """(online variable, target variable) for every trainable online variable, matched by position."""
    pairs = []
    for online, target in zip(online_layers, target_layers):
        if len(online.weights) != len(target.weights):
            raise ValueError(f"{target.name} does not mirror {online.name}: different numbers of variables")
        pairs.extend((source, copy) for source, copy in zip(online.weights, target.weights) if source.trainable)
    return pairs


def update_moving_average(pairs, decay) -> None:
    """target ← decay·target + (1 − decay)·online for every pair (identical on every replica)."""
    for online, target in pairs:
        target.assign(decay * target + (1.0 - decay) * online)


def synchronized_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of a functional `model` whose batch-norm layers synchronize their statistics across replicas.

    Under `MirroredStrategy`, per-replica batch statistics differ from the global batch's; with synchronized
    batch norm the training step is the single-device step of the global batch (at the cost of all-reduces).
    """

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
