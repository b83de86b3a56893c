"""A tiny SavedModel with the two signatures `mssl_tf.export` writes, for tests and benchmarks of the server.

The encoder is a fixed random projection, so it loads in milliseconds and its outputs can be recomputed with numpy:

    embeddings = l2_normalize(flatten(images / 255) @ weights)        # serving_default
    logits = -squared_distance(query embeddings, class prototypes)     # few_shot
    predictions = argmax(logits)

`few_shot` checks its labels as the exported one does (`mssl_tf.export.checked_labels`). The signatures have the
same names, input names, dtypes and shapes as the project's exported encoders
(`serving_default`: `images` uint8 [None, 28, 28, 1] → `embeddings` float32 [None, 64]; `few_shot`:
`support_images`, `support_labels`, `query_images` → `logits`, `predictions`), which is all the server looks at.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
EMBEDDING_SIZE = 64


def projection(seed: int) -> np.ndarray:
    """The encoder's weights for a seed: float32 [784, 64]."""
    return np.random.default_rng(seed).normal(0, 1 / 28, (int(np.prod(IMAGE_SHAPE)), EMBEDDING_SIZE)).astype(np.float32)


def reference_embeddings(images: np.ndarray, seed: int) -> np.ndarray:
    """What `serving_default` returns, computed with numpy (float32 rounding aside)."""
    flat = np.asarray(images, np.float32).reshape(len(images), -1) / 255.0
    features = flat @ projection(seed)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def build_module(seed: int, busy_seconds: float = 0.0):
    """A `tf.Module` whose `serving_default` and `few_shot` functions behave like an exported encoder.

    With `busy_seconds`, a `busy` signature too: `serving_default` after spinning that long in the graph (a model
    call of known duration, for tests of queues and deadlines).
    """
    import tensorflow as tf

    from mssl_tf.export import MAX_WAYS, checked_labels

    class ProjectionEncoder(tf.Module):
        def __init__(self):
            super().__init__(name="projection_encoder")
            self.weights = tf.Variable(projection(seed), name="weights")

        def _embed(self, images):
            flat = tf.reshape(tf.cast(images, tf.float32) / 255.0, [-1, int(np.prod(IMAGE_SHAPE))])
            return tf.math.l2_normalize(tf.matmul(flat, self.weights), axis=1)

        @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="images")])
        def serving_default(self, images):
            return {"embeddings": self._embed(images)}

        @tf.function(input_signature=[
            tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="support_images"),
            tf.TensorSpec([None], tf.int32, name="support_labels"),
            tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="query_images"),
        ])
        def few_shot(self, support_images, support_labels, query_images):
            labels = checked_labels(support_labels, MAX_WAYS)
            ways = tf.reduce_max(labels) + 1
            prototypes = tf.math.unsorted_segment_mean(self._embed(support_images), labels, ways)
            queries = self._embed(query_images)
            logits = -tf.reduce_sum(tf.square(queries[:, None, :] - prototypes[None, :, :]), axis=-1)
            return {"logits": logits, "predictions": tf.argmax(logits, axis=1, output_type=tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="images")])
        def busy(self, images):
            start = tf.timestamp()
            (spun,) = tf.while_loop(lambda count: tf.timestamp() - start < busy_seconds, lambda count: (count + 1,),
                                    (tf.constant(0, tf.int64),))
            with tf.control_dependencies([spun]):
                return {"embeddings": self._embed(images)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="png")])
        def lengths(self, png):
            return {"lengths": tf.strings.length(png)}

    return ProjectionEncoder()


def write_test_model(base_path, version: int, seed: int | None = None, atomic: bool = True,
                     busy_seconds: float = 0.0, strings: bool = False) -> Path:
    """Writes `<base_path>/<version>/` (a SavedModel with both signatures) and returns its path.

    Args:
        base_path: the model's base directory (as given to `--model_base_path`).
        version: the numeric version directory to write.
        seed: the projection's seed; defaults to `version`, so every version answers differently.
        atomic: write to a hidden temporary directory first and rename it into place, as `mssl_tf.export`
            does, so a polling server never sees a half-written version.
        busy_seconds: if positive, also a `busy` signature that takes this long per call.
        strings: also a `lengths` signature (`png` string [None] → `lengths` int32 [None]), for string inputs.
    """
    import tensorflow as tf

    module = build_module(version if seed is None else seed, busy_seconds)
    signatures = {"serving_default": module.serving_default, "few_shot": module.few_shot}
    if busy_seconds > 0:
        signatures["busy"] = module.busy
    if strings:
        signatures["lengths"] = module.lengths
    base_path = Path(base_path)
    base_path.mkdir(parents=True, exist_ok=True)
    target = base_path / str(version)
    staging = base_path / f".tmp-{version}-{os.getpid()}" if atomic else target
    tf.saved_model.save(module, str(staging), signatures=signatures)
    if atomic:
        os.replace(staging, target)
    return target
