"""Reload an exported encoder into Keras and fine-tune it with a classification head.

Keras 3's `load_model` does not read SavedModels, so an exported version offers two ways back:
- `"keras"`: the `.keras` twin that `mssl_tf.export` stores in `assets.extra/model.keras` — the whole method
  model, so it can also keep training with its own method (`model.fit(episodes)`).
- `"saved_model"`: the SavedModel itself through `keras.layers.TFSMLayer` (its `embed_float` signature, weights
  trainable) — for a SavedModel that has no twin, e.g. one exported elsewhere with the same signatures.

Example:
    >>> encoder = load_exported("export/prototypical-networks-conv4-omniglot/1")
    >>> classifier = fine_tune(encoder, images, labels, epochs=30)   # images float32 [n, 28, 28, 1], ink = 1
    >>> classifier.predict(new_images).argmax(-1)
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from mssl_tf.export import EXTRA_DIR, KERAS_TWIN, read_metadata


def load_exported(version_dir: str | os.PathLike, how: str = "keras") -> keras.Model:
    """The encoder (float32 images of the model's input, uint8 ÷ 255 → features) of an exported version.

    Args:
        version_dir: `<base>/<name>/<version>` as written by `mssl-tf export`.
        how: `"keras"` (the `.keras` twin's backbone: the raw features the model was trained with) or
            `"saved_model"` (`TFSMLayer` over the `embed_float` signature: L2-normalized embeddings).
    """
    version_dir = Path(version_dir)
    if how == "keras":
        import mssl_tf.methods  # noqa: F401  (registers the serializable classes)

        twin = version_dir / EXTRA_DIR / KERAS_TWIN
        if not twin.is_file():
            raise FileNotFoundError(f"{twin} is missing: export with `mssl-tf export`, or load with how='saved_model'")
        model = keras.saving.load_model(twin)
        return getattr(model, "backbone", model)
    if how == "saved_model":
        images = keras.Input(tuple(read_metadata(version_dir)["input"]["shape"]), name="images")
        layer = keras.layers.TFSMLayer(str(version_dir), call_endpoint="embed_float", trainable=True)
        return keras.Model(images, layer(images)["embeddings"], name="exported_encoder")
    raise ValueError(f"how must be 'keras' or 'saved_model', got {how!r}")


def classifier(encoder: keras.Model, classes: int, train_encoder: bool = True) -> keras.Model:
    """`encoder` followed by a linear layer to `classes` logits."""
    encoder.trainable = train_encoder
    images = keras.Input(tuple(encoder.input_shape[1:]), name="images")
    logits = keras.layers.Dense(classes, name="classifier")(encoder(images))
    return keras.Model(images, logits, name="fine_tuned_classifier")


class _SavedModelVariablesAdam(keras.optimizers.Adam):
    """Adam that can hold slots for variables restored from a SavedModel (`TFSMLayer`).

    Keras 3.15 names an optimizer slot after its variable's `path`, and a restored TF variable's path ends in
    `:0`, which is not a valid name scope (`ValueError: 'block0_conv_kernel:0_momentum' is not a valid scope
    name`). Only the slot's name changes here; the update is Adam's.
    """

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        path = str(getattr(reference_variable, "path", ""))
        if ":" not in path:
            return super().add_variable_from_reference(reference_variable, name, initializer)
        return self.add_variable(
            shape=reference_variable.shape, initializer=initializer, dtype=reference_variable.dtype,
            name=f"{path.replace('/', '_').replace(':', '_')}_{name or 'var'}",
        )


def fine_tune(
    encoder: keras.Model, images: np.ndarray, labels: np.ndarray, epochs: int = 30, learning_rate: float = 1e-3,
    train_encoder: bool = True, batch_size: int = 32, seed: int = 0,
) -> keras.Model:
    """Trains `encoder` + a new linear head on labeled `images` (float32, ink = 1) and returns the classifier."""
    keras.utils.set_random_seed(seed)
    model = classifier(encoder, int(np.max(labels)) + 1, train_encoder)
    model.compile(_SavedModelVariablesAdam(learning_rate, name="adam"),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(images, labels, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return model
