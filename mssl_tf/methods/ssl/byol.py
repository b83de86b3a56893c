"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mssl_tf.heads import prediction_head, projection_head
from mssl_tf.losses import symmetric_byol_loss
from mssl_tf.methods.ssl.base import SSLModel, frozen_copy, moving_average_pairs, update_moving_average


def target_decay(base_decay: float, step, total_steps: int) -> tf.Tensor:
    """BYOL's cosine schedule of the target's EMA decay: τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2, k = `step`."""
    progress = tf.minimum(tf.cast(step, tf.float32) / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base_decay) * (tf.cos(math.pi * progress) + 1.0) / 2.0


@keras.saving.register_keras_serializable(package="mssl_tf")
class BYOL(SSLModel):
    """An online network (backbone, projector, predictor) regresses an EMA target network's projection.

    The target's decay follows BYOL's cosine schedule over the optimizer steps k = 0..K:
    τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2, from τ_base to 1. The target is updated at the start of each
    training step from the current online weights (the same sequence of targets as an update after each step).

    Args:
        backbone: images → features.
        base_decay: τ_base.
        total_steps: K, the training's number of optimizer steps (set by `mssl-tf train` from `--steps`).
        hidden_units: hidden widths of the projector and of the predictor (batch norm, ReLU).
        projection_units: projection (and prediction) width.
        probe_classes: classes of the online linear probe (0: none).
    """

    RUN_ARGUMENTS = (*SSLModel.RUN_ARGUMENTS, "total_steps")  # τ reaches 1 at the run's last planned step

    def __init__(self, backbone, base_decay=0.99, total_steps=1000, hidden_units=(512,), projection_units=128,
                 probe_classes=0, **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        self.base_decay = float(base_decay)
        self.total_steps = int(total_steps)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units = int(projection_units)
        self.projector = projection_head(self.feature_dim, self.hidden_units, self.projection_units)
        self.predictor = prediction_head(self.projection_units, self.hidden_units)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector, self.feature_dim)
        self.target_pairs = moving_average_pairs(
            [self.backbone, self.projector], [self.target_backbone, self.target_projector]
        )

    def decay(self):
        return target_decay(self.base_decay, self.optimizer.iterations, self.total_steps)

    def compute_ssl_loss(self, views, training):
        if training:
            update_moving_average(self.target_pairs, self.decay())
        batch = tf.shape(views[0])[0]
        images = tf.concat(views[:2], 0)
        features = self.backbone(images, training=training)
        predictions = self.predictor(self.projector(features, training=training), training=training)
        targets = tf.stop_gradient(
            self.target_projector(self.target_backbone(images, training=training), training=training)
        )
        loss = symmetric_byol_loss(predictions[:batch], targets[batch:], predictions[batch:], targets[:batch])
        return loss, features[:batch]

    def get_config(self):
        return {**super().get_config(), "base_decay": self.base_decay, "total_steps": self.total_steps,
                "hidden_units": list(self.hidden_units), "projection_units": self.projection_units}
