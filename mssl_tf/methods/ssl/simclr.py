"""SimCLR (Chen, Kornblith, Norouzi & Hinton, ICML 2020)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import projection_head
from mssl_tf.losses import nt_xent
from mssl_tf.methods.ssl.base import SSLModel


@keras.saving.register_keras_serializable(package="mssl_tf")
class SimCLR(SSLModel):
    """Contrastive instance discrimination: NT-Xent between the projections of two views.

    Negatives are the other views of the global batch (gathered across replicas).

    Args:
        backbone: images → features.
        temperature: τ of NT-Xent.
        hidden_units: hidden widths of the projection MLP (batch norm, ReLU).
        projection_units: output width of the projection.
        probe_classes: classes of the online linear probe (0: none).
    """

    def __init__(self, backbone, temperature=0.1, hidden_units=(256,), projection_units=128, probe_classes=0,
                 **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        self.temperature = float(temperature)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units = int(projection_units)
        self.projector = projection_head(self.feature_dim, self.hidden_units, self.projection_units)

    def compute_ssl_loss(self, views, training):
        batch = tf.shape(views[0])[0]
        features = self.backbone(tf.concat(views[:2], 0), training=training)
        projections = self.projector(features, training=training)
        return nt_xent(projections[:batch], projections[batch:], self.temperature), features[:batch]

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "hidden_units": list(self.hidden_units),
                "projection_units": self.projection_units}
