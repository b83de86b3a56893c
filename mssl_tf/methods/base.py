"""`BackboneModel`: what every method shares, whatever it trains on (episodes or multi-view batches).

A method owns a backbone, maps images to the backbone's features when called, serializes the backbone with its
own constructor arguments, and builds its optimizer on `compile`. Two class attributes tell a training run what
the method needs, so drivers and the command line never list methods by name:

- `BATCHES`: what `train_step` takes: `"episodes"` (meta-batches of N-way K-shot tasks) or `"views"` (multi-view
  batches of unlabeled images);
- `RUN_ARGUMENTS`: constructor arguments a run fills in from its own settings (`mssl_tf.training.model` knows
  the vocabulary: `ways`, `total_steps`, `probe_classes`); explicit method options win.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def replica_count() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


class OptimizerBuiltOnCompile:
    """Mixin for the method bases: `compile` builds the optimizer's variables at once.

    They are then created inside the caller's strategy scope, never lazily inside a replica's `tf.function`
    (which fails under `tf.distribute`). Loading a saved model recompiles through the same override, which is
    what restores the optimizer state.
    """

    def compile(self, optimizer="adam", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))


class BackboneModel(OptimizerBuiltOnCompile, keras.Model):
    """Base of `EpisodicModel` and `SSLModel`: a backbone, a loss tracker, `call` = backbone features.

    Args:
        backbone: functional model mapping images to feature vectors.
    """

    BATCHES: str = ""
    RUN_ARGUMENTS: tuple[str, ...] = ()

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, images, training=False):
        return self.backbone(images, training=training)

    # === Few-shot adaptation (what `mssl-tf eval` scores and the exported `few_shot` signature runs) ===
    @property
    def few_shot_ways(self) -> int | None:
        """Classes a task must have for this method to adapt to it (a fixed-width classifier), or None: any."""
        return None

    def few_shot_logits(self, support_images, support_labels, query_images) -> tf.Tensor:
        """One task, adapted as this method adapts in evaluation → query logits `[queries, ways]`.

        Runs the method's own `meta_batch_learn(..., training=False)` on a one-task batch (the query labels it
        takes only feed a loss, discarded here), so a served task is classified exactly as in `mssl-tf eval`.
        """
        task = {"support_images": support_images[tf.newaxis], "support_labels": support_labels[tf.newaxis],
                "query_images": query_images[tf.newaxis],
                "query_labels": tf.zeros(tf.shape(query_images)[:1], tf.int32)[tf.newaxis]}
        _, logits = self.meta_batch_learn(task, training=False)
        return logits[0]

    def get_config(self):
        config = super().get_config()
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
