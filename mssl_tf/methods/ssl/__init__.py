"""Self-supervised methods: `SSLModel` (the shared machinery) and one small subclass per method."""

from mssl_tf.methods.ssl.barlow_twins import BarlowTwins
from mssl_tf.methods.ssl.base import SSLModel, synchronized_batch_norm
from mssl_tf.methods.ssl.byol import BYOL
from mssl_tf.methods.ssl.moco import MoCo
from mssl_tf.methods.ssl.psco import PsCo
from mssl_tf.methods.ssl.simclr import SimCLR
from mssl_tf.methods.ssl.simcse import SimCSE
from mssl_tf.methods.ssl.simsiam import SimSiam
from mssl_tf.methods.ssl.transformation import TransformationPrediction

SSL_METHODS = {
    "simclr": (SimCLR, {}),
    "simcse": (SimCSE, {}),
    "moco": (MoCo, {}),
    "psco": (PsCo, {}),
    "byol": (BYOL, {}),
    "simsiam": (SimSiam, {}),
    "barlow_twins": (BarlowTwins, {}),
    "transformation": (TransformationPrediction, {}),
}

__all__ = [
    "BYOL",
    "BarlowTwins",
    "MoCo",
    "PsCo",
    "SSLModel",
    "SSL_METHODS",
    "SimCLR",
    "SimCSE",
    "SimSiam",
    "TransformationPrediction",
    "synchronized_batch_norm",
]
