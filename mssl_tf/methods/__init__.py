"""Methods: one registry from a name to a `keras.Model` class and its default options."""

from mssl_tf.methods.episodic import EpisodicModel
from mssl_tf.methods.imaml import IMAML
from mssl_tf.methods.maml import MAML
from mssl_tf.methods.mann import MANN
from mssl_tf.methods.matching import MatchingNet
from mssl_tf.methods.meta_ssl import META_SSL_METHODS
from mssl_tf.methods.protonet import ProtoNet
from mssl_tf.methods.relation import RelationNet
from mssl_tf.methods.reptile import Reptile
from mssl_tf.methods.siamese import SiameseNet
from mssl_tf.methods.ssl import SSL_METHODS, SSLModel
from mssl_tf.methods.versa import Versa

METHODS = {
    "protonet": (ProtoNet, {}),
    "matching": (MatchingNet, {}),
    "siamese": (SiameseNet, {}),
    "relation": (RelationNet, {}),
    "maml": (MAML, {}),
    "fomaml": (MAML, {"first_order": True}),
    "metasgd": (MAML, {"learn_inner_learning_rate": True}),
    "anil": (MAML, {"adapt": "head"}),
    "reptile": (Reptile, {"first_order": True}),
    "imaml": (IMAML, {}),
    "mann": (MANN, {}),  # Santoro et al. 2016: LSTM controller + LRUA external memory
    "versa": (Versa, {}),  # generation-based: a Gaussian classifier generated per class (VERSA, ML-PIP)
    **META_SSL_METHODS,  # memory- and network-based meta-learning (mssl_tf/methods/meta_ssl/)
    **SSL_METHODS,  # self-supervised: trained on multi-view batches of unlabeled images (mssl_tf/methods/ssl/)
}


DEFAULT_METHOD = "protonet"  # what `mssl-tf train` trains when no --method is given


def method_class(name: str) -> type:
    """The registered class of `name` (its `BATCHES` and `RUN_ARGUMENTS` tell a run what it needs)."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name][0]


def build_method(name: str, backbone, **options):
    """A method from the registry, e.g. `build_method("maml", conv4(), ways=5, inner_steps=1)`."""
    cls, defaults = method_class(name), METHODS[name][1]
    return cls(backbone, **{**defaults, **options})


__all__ = [
    "DEFAULT_METHOD", "IMAML", "MANN", "METHODS", "EpisodicModel", "MAML", "MatchingNet", "ProtoNet", "RelationNet",
    "Reptile", "SSLModel", "SSL_METHODS", "SiameseNet", "Versa", "build_method", "method_class",
]
