"""mssl-tf: meta-learning and self-supervised representation learning for TensorFlow/Keras.

Subpackages load on first use (`mssl_tf.zoo`, `mssl_tf.methods`, ...), so `import mssl_tf` alone does not start
TensorFlow: the command line sets TensorFlow's log level before anything imports it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

SUBMODULES = ("backbones", "data", "evaluation", "export", "finetune", "losses", "methods", "results", "serving",
              "training", "zoo")
NAMES = {"METHODS": "methods", "build_method": "methods", "build_backbone": "backbones", "conv4": "backbones"}

__all__ = [*NAMES, *SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"mssl_tf.{name}")
    if name in NAMES:
        return getattr(importlib.import_module(f"mssl_tf.{NAMES[name]}"), name)
    raise AttributeError(f"module 'mssl_tf' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
