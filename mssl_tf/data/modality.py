"""Images or text: what a class array holds, and how its examples become what a model takes.

Class arrays hold uint8 images (`[classes, per class, H, W(, C)]`, ÷ 255 before the encoder) or sentences
(`[classes, per class]` of str, numpy `object`; a `tf.string` tensor in a graph, fed to the model as they are:
text encoders tokenize inside the model). Every pipeline that draws examples (episodes, views, unsupervised tasks,
frozen-encoder protocols) converts them with `model_input`, so methods never know which they train on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def is_text(examples) -> bool:
    """Whether `examples` (a numpy array, a tensor or a dtype) holds strings."""
    dtype = getattr(examples, "dtype", examples)
    if isinstance(dtype, tf.dtypes.DType):
        return dtype == tf.string
    return np.dtype(dtype).kind in ("O", "U", "S")


def as_constant(examples: np.ndarray) -> tf.Tensor:
    """A class array as a graph constant: uint8 images as they are, sentences as UTF-8 `tf.string`."""
    if is_text(examples):
        return tf.constant(np.asarray(examples, dtype=object), tf.string)  # str is encoded as UTF-8
    return tf.constant(examples)


def model_input(examples: tf.Tensor) -> tf.Tensor:
    """Examples as the model takes them: uint8 images → float32 in [0, 1] with a channel axis when the images have
    none (`[..., H, W]` from a `[classes, per class, H, W]` array); strings unchanged."""
    if examples.dtype == tf.string:
        return examples
    return tf.cast(examples, tf.float32) / 255.0


def example_rank(class_examples) -> int:
    """Axes of one example in a class array: 0 for a sentence, 3 for an image (a gray `[H, W]` image counts 3,
    as it gets its channel axis in `sample_episode`)."""
    return 0 if is_text(class_examples) else 3
