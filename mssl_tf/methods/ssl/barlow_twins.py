"""Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import projection_head
from mssl_tf.losses import barlow_twins_loss
from mssl_tf.methods.ssl.base import SSLModel


@keras.saving.register_keras_serializable(package="mssl_tf")
class BarlowTwins(SSLModel):
    """Drives the cross-correlation of two views' projections towards the identity.

    The cross-correlation is computed with the global batch's statistics (all-reduced across replicas).

    Args:
        backbone: images → features.
        redundancy_weight: λ, the weight of the off-diagonal terms.
        hidden_units: hidden widths of the projector (batch norm, ReLU).
        projection_units: projector output width (the cross-correlation is this square).
        probe_classes: classes of the online linear probe (0: none).
    """

    def __init__(self, backbone, redundancy_weight=5e-3, hidden_units=(512,), projection_units=512, probe_classes=0,
                 **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        self.redundancy_weight = float(redundancy_weight)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units = int(projection_units)
        self.projector = projection_head(self.feature_dim, self.hidden_units, self.projection_units)

    def compute_ssl_loss(self, views, training):
        batch = tf.shape(views[0])[0]
        features = self.backbone(tf.concat(views[:2], 0), training=training)
        projections = self.projector(features, training=training)
        loss = barlow_twins_loss(projections[:batch], projections[batch:], self.redundancy_weight)
        return loss, features[:batch]

    def get_config(self):
        return {**super().get_config(), "redundancy_weight": self.redundancy_weight,
                "hidden_units": list(self.hidden_units), "projection_units": self.projection_units}
