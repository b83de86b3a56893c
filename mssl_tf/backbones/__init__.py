"""Backbones: models mapping examples to feature vectors (images: functional Keras models built for an input shape;
sentences: text models built from a training corpus, tokenizing inside, `mssl_tf.backbones.text`)."""

from mssl_tf.backbones.conv4 import conv4
from mssl_tf.backbones.fused_batch_norm import FusedBatchNormalization
from mssl_tf.backbones.resnet import resnet12, resnet18, resnet50
from mssl_tf.backbones.text import bag_of_words, text_transformer

IMAGE_BACKBONES = {"conv4": conv4, "resnet12": resnet12, "resnet18": resnet18, "resnet50": resnet50}
TEXT_BACKBONES = {"transformer": text_transformer, "bag_of_words": bag_of_words}
BACKBONES = {**IMAGE_BACKBONES, **TEXT_BACKBONES}


def build_backbone(name: str, **kwargs):
    """A backbone from the registry by name, e.g. `build_backbone("conv4", input_shape=(28, 28, 1))` or
    `build_backbone("transformer", corpus=sentences)`."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def is_text_backbone(name: str) -> bool:
    return name in TEXT_BACKBONES


__all__ = ["BACKBONES", "FusedBatchNormalization", "IMAGE_BACKBONES", "TEXT_BACKBONES", "bag_of_words",
           "build_backbone", "conv4", "is_text_backbone", "resnet12", "resnet18", "resnet50", "text_transformer"]
