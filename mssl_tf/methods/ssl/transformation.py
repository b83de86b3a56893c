"""Transformation prediction: classify which transformation of a set was applied (e.g. Gidaris et al., ICLR 2018)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.data.views import TRANSFORMATIONS, transformation_batch
from mssl_tf.heads import projection_head
from mssl_tf.losses import transformation_prediction_loss
from mssl_tf.methods.ssl.base import SSLModel


@keras.saving.register_keras_serializable(package="mssl_tf")
class TransformationPrediction(SSLModel):
    """Every transformation of the set is applied to every image of the first view; a classifier on the backbone's
    features predicts which one it was.

    Args:
        backbone: images → features.
        transformations: names from `mssl_tf.data.views.TRANSFORMATIONS` (rotations need square images).
        hidden_units: hidden widths of the classifier (none: linear).
        probe_classes: classes of the online linear probe (0: none); it sees the first transformation's features.
    """

    def __init__(self, backbone, transformations=tuple(TRANSFORMATIONS), hidden_units=(), probe_classes=0,
                 **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        unknown = [name for name in transformations if name not in TRANSFORMATIONS]
        if unknown or len(transformations) < 2:
            raise ValueError(f"transformations must be at least two of {list(TRANSFORMATIONS)}, got "
                             f"{list(transformations)}")
        self.transformations = tuple(transformations)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.classifier = projection_head(self.feature_dim, self.hidden_units, len(self.transformations),
                                          name="classifier")

    def compute_ssl_loss(self, views, training):
        images, labels = transformation_batch(views[0], self.transformations)
        features = self.backbone(images, training=training)
        logits = self.classifier(features, training=training)
        return transformation_prediction_loss(labels, logits), features[: tf.shape(views[0])[0]]

    def get_config(self):
        return {**super().get_config(), "transformations": list(self.transformations),
                "hidden_units": list(self.hidden_units)}
