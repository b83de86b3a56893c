"""SimCSE, unsupervised (Gao, Yao & Chen, EMNLP 2021): sentence embeddings by contrasting dropout noise."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import projection_head
from mssl_tf.losses import in_batch_contrastive
from mssl_tf.methods.ssl.base import SSLModel


@keras.saving.register_keras_serializable(package="mssl_tf")
class SimCSE(SSLModel):
    """Each sentence of the first view is encoded twice with dropout on (two independent masks, one forward pass
    over the doubled batch); the second encoding is its positive, the other sentences' second encodings of the
    global batch (gathered across replicas) its negatives (`mssl_tf.losses.in_batch_contrastive`).

    Only the first view is read: with the default `identity` text views it is the sentence itself, as in the
    paper; other presets (`--views text`) add word deletion and cropping on top of dropout.

    Args:
        backbone: a text backbone (sentences → features) with dropout, e.g. `mssl_tf.backbones.text_transformer`.
        temperature: τ (0.05 in the paper).
        hidden_units, projection_units: a projection MLP trained with the loss (none by default: the paper's
            BERT keeps its MLP only in training; a small encoder trained from scratch does without).
        probe_classes: classes of the online linear probe (0: none).
    """

    def __init__(self, backbone, temperature=0.05, hidden_units=(), projection_units=0, probe_classes=0,
                 **kwargs):
        super().__init__(backbone, probe_classes, **kwargs)
        self.temperature = float(temperature)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.projection_units = int(projection_units)
        self.projector = None
        if self.projection_units:
            self.projector = projection_head(self.feature_dim, self.hidden_units, self.projection_units)

    def compute_ssl_loss(self, views, training):
        sentences = views[0]
        batch = tf.shape(sentences)[0]
        features = self.backbone(tf.concat([sentences, sentences], 0), training=training)
        encodings = features if self.projector is None else self.projector(features, training=training)
        return in_batch_contrastive(encodings[:batch], encodings[batch:], self.temperature), features[:batch]

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "hidden_units": list(self.hidden_units),
                "projection_units": self.projection_units}
