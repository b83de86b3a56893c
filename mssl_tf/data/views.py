"""Multi-view augmentation for self-supervised learning, as a `tf.data` stage; transformation-set ops.

Views of example `k` (its position in the stream) are drawn with stateless random ops keyed by
`(seed, k, view)`, like episodes (`mssl_tf.data.episodes`): the pipeline is deterministic for a seed whatever
the parallelism or batch size. The random parameters are drawn per example; the image operations then run
batched (one projective resampling per view covers crop, flip, rotation, shear and translation).

An element of `multi_view_dataset` is a dict:
    views  [batch, views, H, W, C] float32 in [0, 1]
    labels [batch] int32 (only when asked for: for an online probe, never for the encoder)

Presets (`VIEW_PRESETS`): `omniglot` (random resized crop, small rotation/shear/translation, zero fill: glyph
background), `omniglot_elastic` (the same plus a smooth elastic displacement), `crop_flip` (random resized crop
with scale 0.2–1 and horizontal flip, zero fill: PsCo's Omniglot views, github.com/alinlab/PsCo), `rgb` (SimCLR's: random resized
crop with scale 0.2–1, horizontal flip, color jitter 0.4/0.4/0.4/0.1 with probability 0.8, grayscale 0.2,
Gaussian blur 0.5), `none` (identity views).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from mssl_tf.data.modality import as_constant, is_text, model_input
from mssl_tf.data.text_views import TEXT_VIEW_PRESETS, text_view_config, text_views
from mssl_tf.data.text_views import config_dict as text_config_dict


@dataclass(frozen=True)
class ViewConfig:
    """Augmentation parameters of one dataset family.

    Attributes:
        crop_scale: range of the crop's area as a fraction of the image (random resized crop).
        crop_ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        rotation_degrees: rotation drawn uniformly in ±this.
        shear: shear factor drawn uniformly in ±this.
        translate: translation drawn uniformly in ±this fraction of the image size.
        horizontal_flip: probability of a horizontal flip.
        elastic_alpha: largest elastic displacement in pixels (0: off).
        elastic_grid: the displacement field is drawn on a `grid`×`grid` lattice and interpolated (smoothness).
        color_jitter: probability of applying brightness/contrast/saturation/hue jitter (RGB only).
        brightness, contrast, saturation, hue: jitter strengths (SimCLR's s·(0.8, 0.8, 0.8, 0.2)).
        grayscale: probability of converting to gray (RGB only).
        blur: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation, in pixels.
        fill: `constant` (zeros, the glyph background) or `reflect` outside the image.
    """

    crop_scale: tuple[float, float] = (1.0, 1.0)
    crop_ratio: tuple[float, float] = (1.0, 1.0)
    rotation_degrees: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    horizontal_flip: float = 0.0
    elastic_alpha: float = 0.0
    elastic_grid: int = 4
    color_jitter: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    fill: str = "constant"

    def __post_init__(self):
        if self.fill not in ("constant", "reflect"):
            raise ValueError(f"fill must be 'constant' or 'reflect', got {self.fill!r}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")


VIEW_PRESETS = {
    "none": ViewConfig(),
    "omniglot": ViewConfig(crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25), rotation_degrees=15.0, shear=0.2,
                           translate=0.08),
    "omniglot_elastic": ViewConfig(crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25), rotation_degrees=15.0, shear=0.2,
                                   translate=0.08, elastic_alpha=1.5),
    "crop_flip": ViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(0.75, 4 / 3), horizontal_flip=0.5),
    "rgb": ViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(0.75, 4 / 3), horizontal_flip=0.5, color_jitter=0.8,
                      grayscale=0.2, blur=0.5, fill="reflect"),
}

SCALAR_PARAMETERS = ("scale", "log_ratio", "crop_x", "crop_y", "rotation", "shear", "translate_x", "translate_y",
                     "flip", "jitter", "brightness", "contrast", "saturation", "hue", "gray", "blur", "sigma")


def view_config(preset) -> ViewConfig:
    """A `ViewConfig` from a preset name, a dict of fields, or a `ViewConfig`."""
    if isinstance(preset, ViewConfig):
        return preset
    if isinstance(preset, dict):
        return ViewConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in preset.items()})
    if preset not in VIEW_PRESETS:
        raise ValueError(f"Unknown view preset {preset!r}; registered: {sorted(VIEW_PRESETS)}")
    return VIEW_PRESETS[preset]


def view_parameters(seed: tf.Tensor, config: ViewConfig) -> tf.Tensor:
    """The random parameters of one view, a float32 vector, from a stateless `seed` pair."""
    grid = config.elastic_grid
    uniform = tf.random.stateless_uniform([len(SCALAR_PARAMETERS) + 2 * grid * grid], seed)
    low_high = {
        "scale": config.crop_scale,
        "log_ratio": (math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])),
        "rotation": (-math.radians(config.rotation_degrees), math.radians(config.rotation_degrees)),
        "shear": (-config.shear, config.shear),
        "translate_x": (-config.translate, config.translate),
        "translate_y": (-config.translate, config.translate),
        "brightness": (-config.brightness, config.brightness),
        "contrast": (1 - config.contrast, 1 + config.contrast),
        "saturation": (1 - config.saturation, 1 + config.saturation),
        "hue": (-config.hue, config.hue),
        "sigma": config.blur_sigma,
    }
    low = np.zeros(uniform.shape[0], np.float32)
    high = np.ones(uniform.shape[0], np.float32)
    for index, name in enumerate(SCALAR_PARAMETERS):
        low[index], high[index] = low_high.get(name, (0.0, 1.0))
    low[len(SCALAR_PARAMETERS):] = -1.0
    return low + (high - low) * uniform


def split_parameters(parameters: tf.Tensor, config: ViewConfig) -> tuple[dict, tf.Tensor]:
    """`[n, P]` → ({name: `[n]`}, elastic field `[n, grid, grid, 2]` in [-1, 1])."""
    scalars = {name: parameters[:, index] for index, name in enumerate(SCALAR_PARAMETERS)}
    grid = config.elastic_grid
    field = tf.reshape(parameters[:, len(SCALAR_PARAMETERS):], [-1, grid, grid, 2])
    return scalars, field


def geometric_transforms(scalars: dict, height: int, width: int, config: ViewConfig) -> tf.Tensor:
    """`[n, 8]` projective transforms mapping output pixel (x, y) to the input point it samples.

    input = crop_center + translation + R(θ)·Shear(s)·diag(±crop_w/W, crop_h/H)·(output − image_center).
    """
    scale, ratio = scalars["scale"], tf.exp(scalars["log_ratio"])
    crop_width = tf.minimum(width * tf.sqrt(scale * ratio), float(width))
    crop_height = tf.minimum(height * tf.sqrt(scale / ratio), float(height))
    center_x = scalars["crop_x"] * (width - crop_width) + crop_width / 2 - 0.5
    center_y = scalars["crop_y"] * (height - crop_height) + crop_height / 2 - 0.5
    center_x += scalars["translate_x"] * width
    center_y += scalars["translate_y"] * height
    flip = tf.where(scalars["flip"] < config.horizontal_flip, -1.0, 1.0)
    scale_x, scale_y = flip * crop_width / width, crop_height / height
    cosine, sine, shear = tf.cos(scalars["rotation"]), tf.sin(scalars["rotation"]), scalars["shear"]
    # R · Shear · S, with Shear = [[1, s], [0, 1]].
    a00, a01 = cosine * scale_x, (cosine * shear - sine) * scale_y
    a10, a11 = sine * scale_x, (sine * shear + cosine) * scale_y
    output_x, output_y = (width - 1) / 2, (height - 1) / 2
    offset_x = center_x - a00 * output_x - a01 * output_y
    offset_y = center_y - a10 * output_x - a11 * output_y
    zeros = tf.zeros_like(a00)
    return tf.stack([a00, a01, offset_x, a10, a11, offset_y, zeros, zeros], axis=1)


def bilinear_sample(images: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Samples `images [n, H, W, C]` at float pixel coordinates `x`, `y` `[n, H, W]`; zero outside."""
    height, width = images.shape[1], images.shape[2]
    x0, y0 = tf.floor(x), tf.floor(y)
    result = 0.0
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        corner_x, corner_y = x0 + dx, y0 + dy
        weight = (1 - tf.abs(x - corner_x)) * (1 - tf.abs(y - corner_y))
        inside = (corner_x >= 0) & (corner_x <= width - 1) & (corner_y >= 0) & (corner_y <= height - 1)
        indices = tf.stack([tf.clip_by_value(tf.cast(corner_y, tf.int32), 0, height - 1),
                            tf.clip_by_value(tf.cast(corner_x, tf.int32), 0, width - 1)], axis=-1)
        values = tf.gather_nd(images, indices, batch_dims=1)
        result += values * (weight * tf.cast(inside, images.dtype))[..., tf.newaxis]
    return result


def elastic(images: tf.Tensor, field: tf.Tensor, alpha: float) -> tf.Tensor:
    """Displaces every pixel by a smooth field (the coarse `field` bicubically interpolated) of at most ~`alpha` px."""
    height, width = images.shape[1], images.shape[2]
    displacement = alpha * tf.image.resize(field, [height, width], method="bicubic")
    rows, columns = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    return bilinear_sample(images, columns + displacement[..., 0], rows + displacement[..., 1])


def color_jitter(images: tf.Tensor, scalars: dict, config: ViewConfig) -> tf.Tensor:
    """Brightness, contrast, saturation and hue per image (RGB `[n, H, W, 3]`), applied with its probability."""
    per_image = lambda values: values[:, tf.newaxis, tf.newaxis, tf.newaxis]  # noqa: E731
    jittered = images + per_image(scalars["brightness"])
    mean = tf.reduce_mean(jittered, axis=[1, 2], keepdims=True)
    jittered = tf.clip_by_value((jittered - mean) * per_image(scalars["contrast"]) + mean, 0.0, 1.0)
    hue, saturation, value = tf.unstack(tf.image.rgb_to_hsv(jittered), axis=-1)
    saturation = tf.clip_by_value(saturation * per_image(scalars["saturation"])[..., 0], 0.0, 1.0)
    hue = tf.math.floormod(hue + per_image(scalars["hue"])[..., 0], 1.0)
    jittered = tf.image.hsv_to_rgb(tf.stack([hue, saturation, value], axis=-1))
    return tf.where(per_image(scalars["jitter"] < config.color_jitter), jittered, images)


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur with a per-image `sigma [n]`; kernel about 10% of the image size (SimCLR)."""
    count, height, width, channels = tf.shape(images)[0], images.shape[1], images.shape[2], images.shape[3]
    radius = max(1, height // 20)
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernels = tf.exp(-tf.square(offsets)[tf.newaxis] / (2 * tf.square(sigma)[:, tf.newaxis]))
    kernels /= tf.reduce_sum(kernels, axis=1, keepdims=True)  # [n, taps]
    # Images become the channels of one image, so a depthwise convolution applies each image's own kernel.
    stacked = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, -1])
    per_channel = tf.reshape(tf.repeat(kernels, channels, axis=0), [count * channels, -1])  # [n*C, taps]
    taps = 2 * radius + 1
    vertical = tf.reshape(tf.transpose(per_channel), [taps, 1, -1, 1])
    horizontal = tf.reshape(tf.transpose(per_channel), [1, taps, -1, 1])
    padded = tf.pad(stacked, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, vertical, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(blurred, [height, width, count, channels]), [2, 0, 1, 3])


def apply_views(images: tf.Tensor, parameters: tf.Tensor, config: ViewConfig) -> tf.Tensor:
    """Augments `images [n, H, W, C]` (float in [0, 1]) with per-image `parameters [n, P]` (`view_parameters`)."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    scalars, field = split_parameters(parameters, config)
    views = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=geometric_transforms(scalars, height, width, config),
        output_shape=tf.constant([height, width]), fill_value=tf.constant(0.0), interpolation="BILINEAR",
        fill_mode=config.fill.upper(),
    )
    if config.elastic_alpha > 0:
        views = elastic(views, field, config.elastic_alpha)
    per_image = lambda values: values[:, tf.newaxis, tf.newaxis, tf.newaxis]  # noqa: E731
    if channels == 3 and config.color_jitter > 0:
        views = color_jitter(views, scalars, config)
    if channels == 3 and config.grayscale > 0:
        gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(views))
        views = tf.where(per_image(scalars["gray"] < config.grayscale), gray, views)
    if config.blur > 0:
        views = tf.where(per_image(scalars["blur"] < config.blur), gaussian_blur(views, scalars["sigma"]), views)
    return tf.clip_by_value(views, 0.0, 1.0)


def example_seeds(seed: tf.Tensor, views: int) -> tf.Tensor:
    """`[views, 2]` stateless seeds of the views of one example from its `(seed, index)` pair."""
    return tf.stack([tf.random.experimental.stateless_fold_in(seed, view) for view in range(views)])


def make_views(images: tf.Tensor, indices: tf.Tensor, config, views: int = 2, seed: int = 0) -> tf.Tensor:
    """Views `[n, views, H, W, C]` of `images [n, H, W, C]` (float in [0, 1]) that are examples `indices [n]`.

    View v of example k depends only on `(seed, k, v)` and the image.
    """
    config = view_config(config)
    indices = tf.cast(indices, tf.int64)

    def parameters_of(index):
        seeds = example_seeds(tf.stack([tf.constant(seed, tf.int64), index]), views)
        return tf.stack([view_parameters(seeds[view], config) for view in range(views)])

    parameters = tf.map_fn(parameters_of, indices, fn_output_signature=tf.float32)  # [n, views, P]
    return views_from_parameters(images, parameters, config)


def views_from_parameters(images: tf.Tensor, parameters: tf.Tensor, config: ViewConfig) -> tf.Tensor:
    count, views = tf.shape(parameters)[0], parameters.shape[1]
    repeated = tf.repeat(images, views, axis=0)  # example-major: (example 0, views...), (example 1, ...)
    flat = apply_views(repeated, tf.reshape(parameters, [count * views, -1]), config)
    return tf.reshape(flat, [count, views, *images.shape[1:]])


def flatten_classes(class_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[classes, drawings, H, W]` → (images `[classes·drawings, H, W]`, class ids `[classes·drawings]`)."""
    classes, drawings = class_images.shape[:2]
    images = class_images.reshape(classes * drawings, *class_images.shape[2:])
    return images, np.repeat(np.arange(classes, dtype=np.int32), drawings)


def multi_view_dataset(
    images: np.ndarray,
    batch_size: int,
    config="omniglot",
    views: int = 2,
    seed: int = 0,
    labels: np.ndarray | None = None,
    num_batches: int | None = None,
    first_batch: int = 0,
) -> tf.data.Dataset:
    """Batches of augmented views of unlabeled images.

    Examples are visited epoch by epoch, each epoch in a stateless random order keyed by `(seed, epoch)`
    (no repeats within an epoch, so a batch has no duplicate images unless it spans two epochs); the views of
    the k-th example of the stream are keyed by `(seed, k)`.

    Args:
        images: uint8 `[N, H, W]` (gray), `[N, H, W, 1]` or `[N, H, W, 3]`, or sentences `[N]` (str: views
            `[batch, views]` of `tf.string`, `mssl_tf.data.text_views`).
        batch_size: examples per element (the global batch under a distribution strategy).
        config: a `VIEW_PRESETS` name, a dict of `ViewConfig` fields or a `ViewConfig` (sentences: a
            `TEXT_VIEW_PRESETS` name or `TextViewConfig`).
        views: views per example.
        seed: the stream is a pure function of the seed.
        labels: int `[N]`, included as `labels` only when given (for an online probe, never for the encoder).
        num_batches: number of elements; `None` repeats forever.
        first_batch: start the stream at this batch (a resumed run), without augmenting the skipped ones.

    Returns:
        `tf.data.Dataset` of dicts (see module docstring), prefetched.
    """
    images = np.asarray(images)
    text = is_text(images)
    config = text_view_config(config) if text else view_config(config)
    if images.ndim == 3:
        images = images[..., np.newaxis]  # gray [N, H, W] → [N, H, W, 1]
    count = len(images)
    if batch_size > count:
        raise ValueError(f"batch_size {batch_size} exceeds the {count} {'sentences' if text else 'images'}")
    image_table = as_constant(images)
    label_table = None if labels is None else tf.constant(np.asarray(labels, np.int32))

    def epoch_order(epoch):
        order = tf.argsort(tf.random.stateless_uniform([count], tf.stack([tf.constant(seed, tf.int64), -1 - epoch])))
        return tf.data.Dataset.from_tensor_slices(order)

    def example(position, index):
        seeds = example_seeds(tf.stack([tf.constant(seed, tf.int64), position]), views)
        element = {
            "images": model_input(tf.gather(image_table, index)),
            "parameters": seeds if text else tf.stack([view_parameters(seeds[view], config) for view in range(views)]),
        }
        if label_table is not None:
            element["labels"] = tf.gather(label_table, index)
        return element

    def augment(batch):
        make = text_views if text else views_from_parameters
        element = {"views": make(batch["images"], batch["parameters"], config)}
        if "labels" in batch:
            element["labels"] = batch["labels"]
        return element

    stream = tf.data.Dataset.counter().flat_map(epoch_order).enumerate().skip(first_batch * batch_size)
    dataset = stream.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if num_batches is not None:
        dataset = dataset.take(num_batches)
    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


# === Transformation-set ops (transformation-prediction pretext tasks) ===


def downsample(images: tf.Tensor) -> tf.Tensor:
    """2× down-sampling by area averaging, then nearest up-sampling back to the input size."""
    height, width = images.shape[1], images.shape[2]
    small = tf.image.resize(images, [height // 2, width // 2], method="area")
    return tf.image.resize(small, [height, width], method="nearest")


TRANSFORMATIONS = {
    "rot0": lambda images: images,
    "rot90": lambda images: tf.image.rot90(images, 1),
    "rot180": lambda images: tf.image.rot90(images, 2),
    "rot270": lambda images: tf.image.rot90(images, 3),
    "hflip": lambda images: images[:, :, ::-1],
    "vflip": lambda images: images[:, ::-1],
    "downsample": downsample,
}


def apply_transformation(images: tf.Tensor, name: str) -> tf.Tensor:
    """One transformation of the set to `images [n, H, W, C]` (rotations need square images)."""
    if name not in TRANSFORMATIONS:
        raise ValueError(f"Unknown transformation {name!r}; registered: {list(TRANSFORMATIONS)}")
    return TRANSFORMATIONS[name](images)


def transformation_batch(images: tf.Tensor, names) -> tuple[tf.Tensor, tf.Tensor]:
    """Every transformation of `names` applied to every image → (images `[t·n, ...]`, ids `[t·n]`), t = len(names).

    Transformation-major: rows `t·n .. (t+1)·n − 1` hold transformation `t`, labelled `t`.
    """
    transformed = tf.concat([apply_transformation(images, name) for name in names], axis=0)
    labels = tf.repeat(tf.range(len(names), dtype=tf.int32), tf.shape(images)[0])
    return transformed, labels


def config_dict(config: ViewConfig) -> dict:
    """A JSON-ready dict of a `ViewConfig` (recorded in `train.json`)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def describe_views(preset) -> dict:
    """The JSON-ready parameters of an image or text view preset (what `train.json` records)."""
    if isinstance(preset, str) and preset in TEXT_VIEW_PRESETS:
        return text_config_dict(text_view_config(preset))
    return config_dict(view_config(preset))
