"""mssl-tf: meta-learning and self-supervised representation learning for TensorFlow/Keras."""

__version__ = "0.1.0"

from mssl_tf import backbones, data, methods  # noqa: E402
from mssl_tf.backbones import build_backbone, conv4  # noqa: E402
from mssl_tf.methods import METHODS, build_method  # noqa: E402

__all__ = ["METHODS", "backbones", "build_backbone", "build_method", "conv4", "data", "methods", "__version__"]
