"""Backbones: functional models mapping images to feature vectors."""

from mssl_tf.backbones.conv4 import conv4
from mssl_tf.backbones.fused_batch_norm import FusedBatchNormalization
from mssl_tf.backbones.resnet import resnet12, resnet18, resnet50

BACKBONES = {"conv4": conv4, "resnet12": resnet12, "resnet18": resnet18, "resnet50": resnet50}


def build_backbone(name: str, **kwargs):
    """A backbone from the registry by name, e.g. `build_backbone("conv4", input_shape=(28, 28, 1))`."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = ["BACKBONES", "FusedBatchNormalization", "build_backbone", "conv4", "resnet12", "resnet18", "resnet50"]
