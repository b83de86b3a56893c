"""Trained models as TensorFlow SavedModels that TF Serving loads from `<base>/<name>/<version>/`.

The signatures (preprocessing inside the graph, any batch size) are those of `mssl_tf.signatures`: embeddings
from uint8 or float arrays of the model's own input (`InputSpec`: height, width, channels, how files map to it)
and from encoded PNG/JPEG/GIF/BMP files of any size; `few_shot` / `few_shot_png` adapt to a support set as the
method does in `mssl-tf eval`. The graph refuses (InvalidArgumentError, so INVALID_ARGUMENT from TF Serving too)
an empty support set, labels outside `0..max_ways-1` (`MAX_WAYS` = 1024 by default, recorded in the SavedModel
as the variable collection `few_shot_max_ways` and in `mssl_tf.json`), label sets that skip a class, and encoded
images of more than `MAX_IMAGE_PIXELS` pixels (read from the file's header before decoding: a small
"decompression bomb" PNG would otherwise decode to gigabytes).

A version directory also holds, in `assets.extra/` (which TF Serving ignores apart from its warm-up file):
`model.keras` (the whole Keras model, for fine-tuning: `mssl_tf.finetune.load_exported`), `mssl_tf.json`
(provenance, the input spec, the adaptation the few-shot signatures run) and `tf_serving_warmup_requests` (one
request per signature). The version is written to a temporary directory beside its final place and renamed, so a
server polling the base path never sees half a model.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mssl_tf import input_spec as input_specs
from mssl_tf.input_spec import MAX_IMAGE_PIXELS, InputSpec, TextSpec
from mssl_tf.methods.episodic import EpisodicModel
from mssl_tf.signatures import (MAX_WAYS, checked_labels, encoder_of, signatures,  # noqa: F401 (public re-exports)
                                takes_text, text_signatures)

EXTRA_DIR = "assets.extra"
KERAS_TWIN = "model.keras"
METADATA_FILE = "mssl_tf.json"
WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURES = ("serving_default", "embed_float", "embed_png", "few_shot", "few_shot_png")
TEXT_SIGNATURES = ("serving_default", "few_shot")
WARMUP_SENTENCES = ("a small example sentence", "another short sentence for the warm-up")


def model_input_spec(model: keras.Model, spec: InputSpec | TextSpec | dict | None = None) -> InputSpec | TextSpec:
    """`spec` (an `InputSpec`/`TextSpec` or its recorded dict), else the `TextSpec` of a text encoder or the spec
    inferred from an image encoder's input shape (`mssl_tf.input_spec.inferred`)."""
    if isinstance(spec, (InputSpec, TextSpec)):
        return spec
    if spec:
        return InputSpec.from_dict(spec)
    if takes_text(model):
        return input_specs.of_text_encoder(encoder_of(model))
    return input_specs.inferred(encoder_of(model).input_shape[1:])


def check_spec_matches(model: keras.Model, spec: InputSpec | TextSpec) -> None:
    if takes_text(model) != isinstance(spec, TextSpec):
        raise ValueError(f"the input spec ({spec.kind}) does not match the encoder, which takes "
                         f"{'sentences' if takes_text(model) else 'images'}")
    if isinstance(spec, TextSpec):
        return
    shape = tuple(encoder_of(model).input_shape[1:])
    if shape != spec.shape:
        raise ValueError(f"the input spec {spec.shape} does not match the encoder's input {shape}")


def adaptation(model: keras.Model) -> dict:
    """What `few_shot` runs for `model`, recorded in `mssl_tf.json`."""
    if not hasattr(model, "few_shot_logits"):
        return {"method": "nearest prototype of the encoder's features"}
    facts = {"method": type(model).__name__, "fixed_ways": getattr(model, "few_shot_ways", None)}
    for attribute in ("evaluation_inner_steps", "evaluation_write_passes", "inner_learning_rate", "adapt",
                      "first_order"):
        if hasattr(model, attribute):
            facts[attribute] = getattr(model, attribute)
    return facts


def build_archive(model: keras.Model, spec: InputSpec | None = None, max_ways: int = MAX_WAYS,
                  max_pixels: int = MAX_IMAGE_PIXELS) -> keras.export.ExportArchive:
    """An `ExportArchive` of `model` with the signatures of `mssl_tf.signatures` (`few_shot` refuses more than
    `max_ways` classes; encoded images above `max_pixels` pixels are refused)."""
    spec = model_input_spec(model, spec)
    check_spec_matches(model, spec)
    archive = keras.export.ExportArchive()
    # An episodic method adapts with its own layers (classifier, memory, generator); a self-supervised method
    # classifies with its encoder alone (its momentum encoder and queue are not needed to serve).
    archive.track(model if isinstance(model, EpisodicModel) else encoder_of(model))
    archive.add_variable_collection("few_shot_max_ways", [
        tf.Variable(max_ways, trainable=False, dtype=tf.int32, name="few_shot_max_ways")])
    # `serving_default` first: ExportArchive also aliases the first endpoint as the default one.
    endpoints = text_signatures(model, max_ways) if takes_text(model) else signatures(model, spec, max_ways, max_pixels)
    for name, function in endpoints.items():
        archive.add_endpoint(name, function)
    return archive


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The numeric version directories under `<base>/<name>`, ascending (TF Serving ignores other names)."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted(int(entry.name) for entry in path.iterdir() if entry.is_dir() and entry.name.isdigit())


def warmup_images(spec: InputSpec, fixed_ways: int | None = None) -> np.ndarray:
    """Two (or `fixed_ways`) small uint8 images of the model's input: a stroke on a blank image."""
    rows = fixed_ways or 2
    images = np.zeros((rows, *spec.shape), np.uint8)
    height, width = spec.height, spec.width
    for row in range(rows):
        images[row, height // 4: 3 * height // 4, (row + 1) * width // (rows + 1)] = 255
    return images


def encode_png(image: np.ndarray, spec: InputSpec) -> bytes:
    """`image` (uint8 `spec.shape`) as a PNG file that decodes back to it (drawings: dark ink on light paper)."""
    return tf.io.encode_png(255 - image if spec.kind == "drawings" else image).numpy()


def warmup_inputs(spec: InputSpec | TextSpec, fixed_ways: int | None = None) -> dict[str, dict]:
    """One request's inputs per signature: what TF Serving replays before serving a version."""
    if isinstance(spec, TextSpec):
        rows = fixed_ways or 2
        sentences = np.array([f"{WARMUP_SENTENCES[row % 2]} {row}".encode() for row in range(rows)], dtype=object)
        labels = np.arange(rows, dtype=np.int32)
        return {"serving_default": {"sentences": sentences},
                "few_shot": {"support_sentences": sentences, "support_labels": labels, "query_sentences": sentences}}
    images = warmup_images(spec, fixed_ways)
    labels = np.arange(len(images), dtype=np.int32)
    files = np.array([encode_png(image, spec) for image in images], dtype=object)
    return {
        "serving_default": {"images": images},
        "embed_float": {"images": images.astype(np.float32) / 255.0},
        "embed_png": {"png": files},
        "few_shot": {"support_images": images, "support_labels": labels, "query_images": images},
        "few_shot_png": {"support_png": files, "support_labels": labels, "query_png": files},
    }


def warmup_records(spec: InputSpec | TextSpec, fixed_ways: int | None = None) -> list[bytes]:
    """One serialized `PredictionLog` per signature: the requests TF Serving replays before serving a version."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError("Warm-up records need the TF Serving protos: pip install 'mssl-tf[serving]' "
                          "(or export with warmup=False / --no-warmup)") from error
    records = []
    for signature, inputs in warmup_inputs(spec, fixed_ways).items():
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def export_model(
    model: keras.Model,
    base_dir: str | os.PathLike,
    name: str,
    version: int | None = None,
    *,
    warmup: bool = True,
    overwrite: bool = False,
    provenance: dict | None = None,
    spec: InputSpec | dict | None = None,
) -> Path:
    """Writes `model`'s encoder as SavedModel `<base_dir>/<name>/<version>/` (atomically) and returns its path.

    Args:
        model: a trained method model (its `backbone` is exported) or a backbone.
        base_dir: TF Serving's `--model_base_path` parent, e.g. `export`.
        name: the served model name (directory name).
        version: positive integer; default: one more than the highest existing version (1 if none).
        warmup: write `assets.extra/tf_serving_warmup_requests` (needs the `serving` extra).
        overwrite: replace an existing version instead of raising `FileExistsError`.
        provenance: extra facts stored in `assets.extra/mssl_tf.json` (e.g. the zoo card or training command).
        spec: the model's `InputSpec` (or its recorded dict); default: inferred from the encoder's input shape
            (`mssl-tf export` and the pipeline pass the run's or the card's own).

    Returns:
        The version directory.
    """
    model_dir = Path(base_dir) / name
    version = version if version is not None else (versions(model_dir) or [0])[-1] + 1
    if int(version) < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's numeric version directories), got {version}")
    target = model_dir / str(int(version))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pick another --version or pass --overwrite")
    model_dir.mkdir(parents=True, exist_ok=True)
    # A hidden, non-numeric sibling: TF Serving and `mssl-tf serve` skip it while it is being written.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir))
    try:
        written = staging / "saved_model"
        spec = model_input_spec(model, spec)
        build_archive(model, spec).write_out(str(written), verbose=False)
        extra = written / EXTRA_DIR
        extra.mkdir(exist_ok=True)
        model.save(extra / KERAS_TWIN)
        if warmup:
            with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
                for record in warmup_records(spec, getattr(model, "few_shot_ways", None)):
                    writer.write(record)
        encoder = encoder_of(model)
        metadata = {
            "name": name,
            "version": int(version),
            "model_class": type(model).__name__,
            "encoder": encoder.name,
            "embedding_dim": int(encoder.output_shape[-1]),
            "input": spec.to_dict(),
            "few_shot_adaptation": adaptation(model),
            "signatures": list(TEXT_SIGNATURES if isinstance(spec, TextSpec) else SIGNATURES),
            "few_shot_max_ways": MAX_WAYS,
            **({} if isinstance(spec, TextSpec) else {"encoded_image_max_pixels": MAX_IMAGE_PIXELS}),
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            **(provenance or {}),
        }
        (extra / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(written, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_metadata(version_dir: str | os.PathLike) -> dict:
    """The `assets.extra/mssl_tf.json` of an exported version."""
    return json.loads((Path(version_dir) / EXTRA_DIR / METADATA_FILE).read_text())
