"""Trained encoders as TensorFlow SavedModels that TF Serving loads from `<base>/<name>/<version>/`.

Signatures (preprocessing inside the graph, any batch size):

| signature | inputs | outputs |
|---|---|---|
| `serving_default` | `images` uint8 `[batch, 28, 28, 1]`, ink = 255 on 0 (as `mssl_tf.data.load_split` gives) | `embeddings` float32 `[batch, dim]`, L2-normalized |
| `embed_float` | `images` float32 `[batch, 28, 28, 1]`, ink = 1.0 on 0.0 (what the Keras model takes) | `embeddings` |
| `embed_png` | `png` string `[batch]`: encoded PNG/JPEG drawings of any size, dark ink on a light background (the raw Omniglot files) | `embeddings` |
| `few_shot` | `support_images` uint8 `[n, 28, 28, 1]`, `support_labels` int32 `[n]` in `0..ways-1`, `query_images` uint8 `[m, 28, 28, 1]` | `logits` float32 `[m, ways]` (negative squared distance to each class prototype of the raw features), `predictions` int32 `[m]` |

`few_shot` classifies by nearest prototype (Snell et al. 2017) on the encoder's features for every method, the
protocol used for all results of this project; `ways` is `max(support_labels) + 1`. The graph itself refuses
(InvalidArgumentError, so INVALID_ARGUMENT from TF Serving too) an empty support set, labels outside
`0..max_ways-1` (`MAX_WAYS` = 1024 by default, recorded in the SavedModel as the variable collection
`few_shot_max_ways` and in `mssl_tf.json`) and label sets that skip a class, before anything of size `ways` is
allocated. `embed_png` reads
each image's width and height from its PNG or JPEG header and refuses images of more than `MAX_IMAGE_PIXELS`
pixels before decoding them (a small "decompression bomb" PNG would otherwise decode to gigabytes).

A version directory also holds, in `assets.extra/` (which TF Serving ignores apart from its warm-up file):
`model.keras` (the whole Keras model, for fine-tuning: `mssl_tf.finetune.load_exported`), `mssl_tf.json`
(provenance and preprocessing) and `tf_serving_warmup_requests` (one request per signature).
The version is written to a temporary directory beside its final place and renamed, so a server polling the base
path never sees half a model.
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

from mssl_tf.methods.protonet import prototype_logits

IMAGE_SHAPE = (28, 28, 1)
EXTRA_DIR = "assets.extra"
KERAS_TWIN = "model.keras"
METADATA_FILE = "mssl_tf.json"
WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURES = ("serving_default", "embed_float", "embed_png", "few_shot")
MAX_WAYS = 1024  # most classes in one few_shot request (Omniglot's test split has 1692; an episode has 5 to 60)
MAX_IMAGE_PIXELS = 2048 * 2048  # largest drawing embed_png decodes (Omniglot's are 105 x 105)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def checked_labels(support_labels: tf.Tensor, max_ways: int = MAX_WAYS) -> tf.Tensor:
    """`support_labels`, usable only once they are valid: every op that reads the result waits for the checks.

    When the graph runs, raises InvalidArgumentError (TF Serving: INVALID_ARGUMENT) if the support set is empty, a
    label is outside `0..max_ways-1`, or a class below the largest label has no example. Nothing of size `ways`
    can be allocated before that: even the per-class counts of a segment mean read the labels.
    """
    labels = tf.convert_to_tensor(support_labels, tf.int32)
    checks = [
        tf.debugging.assert_positive(tf.size(labels), message="few_shot needs at least one support example"),
        tf.debugging.assert_non_negative(labels, message="support_labels must be in 0..ways-1"),
        tf.debugging.assert_less(labels, tf.constant(max_ways, tf.int32), message=(
            f"support_labels must be below this model's limit of {max_ways} classes (few_shot_max_ways); "
            "number the classes 0..ways-1")),
    ]
    with tf.control_dependencies(checks):
        bounded = tf.identity(labels)
    present = tf.debugging.assert_equal(
        tf.size(tf.unique(bounded).y), tf.reduce_max(bounded) + 1,
        message="support_labels must use every class 0..ways-1 (ways = max label + 1) at least once")
    with tf.control_dependencies([present]):
        return tf.identity(bounded)


def image_size(encoded: tf.Tensor) -> tf.Tensor:
    """`[height, width]` of a PNG or JPEG from its header, without decoding it; InvalidArgumentError otherwise."""
    is_png = tf.equal(tf.strings.substr(encoded, 0, 8), PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 3), JPEG_SIGNATURE)
    known = tf.debugging.assert_equal(is_png | is_jpeg, True, message=(
        "embed_png takes PNG or JPEG images; this one has neither signature"))
    with tf.control_dependencies([known]):
        def png_size():
            whole = tf.debugging.assert_greater_equal(tf.strings.length(encoded), 24, message=(
                "the PNG is cut short: it ends inside its header"))
            with tf.control_dependencies([whole]):
                header = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8)
            values = tf.cast(tf.reshape(header, [2, 4]), tf.int64)
            width, height = tf.unstack(tf.reduce_sum(values * [1 << 24, 1 << 16, 1 << 8, 1], axis=1))
            return tf.stack([height, width])

        def jpeg_size():
            return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

        return tf.cond(is_png, png_size, jpeg_size)


def encoder_of(model: keras.Model) -> keras.Model:
    """The image → features network of a method model (its `backbone`), or the model itself if it is a backbone."""
    return getattr(model, "backbone", model)


def decode_drawing(encoded: tf.Tensor, image_shape=IMAGE_SHAPE) -> tf.Tensor:
    """An encoded drawing (dark ink on light paper, any size) → float32 `image_shape` with ink = 1.

    Mirrors `mssl_tf.data.omniglot.preprocess` (grayscale, Lanczos resize, inversion); TensorFlow's Lanczos-3
    kernel is not bit-identical to Pillow's, so embeddings agree closely but not exactly.
    """
    size = image_size(encoded)
    small_enough = tf.debugging.assert_less_equal(
        tf.reduce_prod(size), tf.constant(MAX_IMAGE_PIXELS, tf.int64),
        message=f"the image is larger than embed_png's limit of {MAX_IMAGE_PIXELS} pixels; scale it down first")
    with tf.control_dependencies([small_enough]):
        image = tf.io.decode_image(encoded, channels=1, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), image_shape[:2], method="lanczos3", antialias=True)
    image = tf.clip_by_value(tf.round(255.0 - image), 0.0, 255.0) / 255.0
    return tf.ensure_shape(image, image_shape)


def build_archive(model: keras.Model, image_shape=IMAGE_SHAPE, max_ways: int = MAX_WAYS) -> keras.export.ExportArchive:
    """An `ExportArchive` of `model`'s encoder with the four signatures of this module (`few_shot` refuses more
    than `max_ways` classes)."""
    encoder = encoder_of(model)
    uint8_images = tf.TensorSpec([None, *image_shape], tf.uint8)

    def features(images01):
        return encoder(images01, training=False)

    def embeddings(images01):
        return {"embeddings": tf.math.l2_normalize(features(images01), axis=-1)}

    @tf.function(input_signature=[uint8_images])
    def serving_default(images):
        return embeddings(tf.cast(images, tf.float32) / 255.0)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_shape], tf.float32)])
    def embed_float(images):
        return embeddings(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed_png(png):
        images = tf.map_fn(lambda one: decode_drawing(one, image_shape), png,
                           fn_output_signature=tf.TensorSpec(image_shape, tf.float32))
        return embeddings(images)

    @tf.function(input_signature=[uint8_images, tf.TensorSpec([None], tf.int32), uint8_images])
    def few_shot(support_images, support_labels, query_images):
        labels = checked_labels(support_labels, max_ways)
        with tf.control_dependencies([labels]):
            support = features(tf.cast(support_images, tf.float32) / 255.0)
            query = features(tf.cast(query_images, tf.float32) / 255.0)
        logits = prototype_logits(support, labels, query)
        return {"logits": logits, "predictions": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_variable_collection("few_shot_max_ways", [
        tf.Variable(max_ways, trainable=False, dtype=tf.int32, name="few_shot_max_ways")])
    # `serving_default` first: ExportArchive also aliases the first endpoint as the default one.
    for name, function in (("serving_default", serving_default), ("embed_float", embed_float),
                           ("embed_png", embed_png), ("few_shot", few_shot)):
        archive.add_endpoint(name, function)
    return archive


def versions(model_dir: str | os.PathLike) -> list[int]:
    """The numeric version directories under `<base>/<name>`, ascending (TF Serving ignores other names)."""
    path = Path(model_dir)
    if not path.is_dir():
        return []
    return sorted(int(entry.name) for entry in path.iterdir() if entry.is_dir() and entry.name.isdigit())


def warmup_records(image_shape=IMAGE_SHAPE) -> list[bytes]:
    """One serialized `PredictionLog` per signature: the requests TF Serving replays before serving a version."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError("Warm-up records need the TF Serving protos: pip install 'mssl-tf[serving]' "
                          "(or export with warmup=False / --no-warmup)") from error
    rows, columns = 2, image_shape[0]
    images = np.zeros((rows, *image_shape), np.uint8)
    images[:, columns // 4: 3 * columns // 4, columns // 2] = 255  # a vertical stroke
    inputs_by_signature = {
        "serving_default": {"images": images},
        "embed_float": {"images": images.astype(np.float32) / 255.0},
        "embed_png": {"png": np.array([tf.io.encode_png(255 - image).numpy() for image in images], dtype=object)},
        "few_shot": {"support_images": images, "support_labels": np.array([0, 1], np.int32), "query_images": images},
    }
    records = []
    for signature, inputs in inputs_by_signature.items():
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
        build_archive(model).write_out(str(written), verbose=False)
        extra = written / EXTRA_DIR
        extra.mkdir(exist_ok=True)
        model.save(extra / KERAS_TWIN)
        if warmup:
            with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
                for record in warmup_records():
                    writer.write(record)
        encoder = encoder_of(model)
        metadata = {
            "name": name,
            "version": int(version),
            "model_class": type(model).__name__,
            "encoder": encoder.name,
            "embedding_dim": int(encoder.output_shape[-1]),
            "input": {"shape": list(IMAGE_SHAPE), "dtype": "uint8", "ink": 255, "background": 0,
                      "resize_from_drawings": "grayscale, Lanczos to 28x28, inverted (embed_png)"},
            "signatures": list(SIGNATURES),
            "few_shot_max_ways": MAX_WAYS,
            "embed_png_max_pixels": MAX_IMAGE_PIXELS,
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
