"""SimSiam (Chen & He, CVPR 2021)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import prediction_head, projection_head
from mssl_tf.losses import simsiam_loss
from mssl_tf.methods.ssl.base import SSLModel


@keras.saving.register_keras_serializable(package="mssl_tf")
class SimSiam(SSLModel):
    """Siamese views, a predictor and a stop-gradient; no negatives, no momentum encoder.

    Args:
        backbone: images → features.
        hidden_units: hidden widths of the projector (its output is batch-normalized, as in the paper).
        projection_units: projector output width.
        predictor_units: the predictor's bottleneck width.
        probe_classes: classes of the online linear probe (0: none).
    """

    def __init__(self, backbone, hidden_units=(256,), projection_units=256, predictor_units=64, probe_classes=0,
                 **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units = int(projection_units)
        self.predictor_units = int(predictor_units)
        self.projector = projection_head(self.feature_dim, self.hidden_units, self.projection_units,
                                         output_batch_norm=True)
        self.predictor = prediction_head(self.projection_units, (self.predictor_units,))

    def compute_ssl_loss(self, views, training):
        batch = tf.shape(views[0])[0]
        features = self.backbone(tf.concat(views[:2], 0), training=training)
        projections = self.projector(features, training=training)
        predictions = self.predictor(projections, training=training)
        loss = simsiam_loss(predictions[:batch], projections[:batch], predictions[batch:], projections[batch:])
        return loss, features[:batch]

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "projection_units": self.projection_units, "predictor_units": self.predictor_units}
