"""What an encoder takes, and how encoded image files become that input inside a TensorFlow graph.

An `InputSpec` is recorded with every exported model and zoo card. It names the uint8 array the data loaders
give (`height × width × channels`, divided by 255 before the encoder) and how a file is turned into it:

- `drawings` (Omniglot): dark ink on light paper, any size → grayscale, Lanczos-3 to `height × width`,
  inverted, so ink = 255 on 0 (`mssl_tf.data.omniglot.preprocess`).
- `photos` (image folders, CIFAR, STL, ...): transparency composited over `background`, converted to
  `channels` (ITU-R 601 luma for grayscale, as Pillow's "L"), the shorter side resized to the target size
  (bicubic, antialiased), then the centre crop (`mssl_tf.data.image_folder.decode_image`).

`decode_encoded(encoded, spec)` is the graph version of both (TensorFlow ops only, so it runs inside a
SavedModel). TensorFlow's resampling kernels are not bit-identical to Pillow's: a served image agrees with the
loader's to a pixel or two, not exactly (measured in tests/test_input_spec.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf

KINDS = ("drawings", "photos")  # image kinds; a text encoder's input is a `TextSpec` (kind "text")
MAX_IMAGE_PIXELS = 2048 * 2048  # largest image decoded in a graph (a tiny "decompression bomb" PNG is refused)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
GIF_SIGNATURE = b"GIF8"
BMP_SIGNATURE = b"BM"
FORMATS = "PNG, JPEG, GIF or BMP"


@dataclass(frozen=True)
class InputSpec:
    """The encoder's input: uint8 `[height, width, channels]` (÷ 255 before the encoder) and how files map to it.

    Args:
        height, width, channels: the array the model takes (channels 1 or 3).
        kind: `drawings` (inverted grayscale, Lanczos) or `photos` (alpha over `background`, shorter side
            bicubic then centre crop).
        background: RGB that transparent pixels are composited over (`photos`).
    """

    height: int
    width: int
    channels: int
    kind: str = "photos"
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.kind == "drawings" and self.channels != 1:
            raise ValueError("drawings are grayscale: channels must be 1")
        object.__setattr__(self, "background", tuple(int(value) for value in self.background))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict:
        """What a card or `mssl_tf.json` records (with a sentence a reader can follow)."""
        return {**asdict(self), "background": list(self.background), "shape": list(self.shape), "dtype": "uint8",
                "scale": "divided by 255 before the encoder", "from_files": self.describe()}

    @classmethod
    def from_dict(cls, values: dict) -> "InputSpec | TextSpec":
        """The spec a card or `mssl_tf.json` records (a `TextSpec` when its kind is `text`)."""
        if values.get("kind") == "text":
            return TextSpec(values.get("tokenizer", ""), values.get("sequence_length"))
        return cls(int(values["height"]), int(values["width"]), int(values["channels"]), values.get("kind", "photos"),
                   tuple(values.get("background", (255, 255, 255))))

    def describe(self) -> str:
        if self.kind == "drawings":
            return (f"grayscale, Lanczos-3 resize to {self.height}x{self.width}, inverted (ink = 255 on 0)")
        colour = "RGB" if self.channels == 3 else "grayscale (ITU-R 601 luma)"
        return (f"transparency composited over RGB {list(self.background)}, {colour}, shorter side bicubic to "
                f"{min(self.height, self.width)}, centre crop {self.height}x{self.width}")


@dataclass(frozen=True)
class TextSpec:
    """A text encoder's input: UTF-8 sentences, `tf.string [batch]`, tokenized inside the model.

    Args:
        tokenizer: what the model does to a sentence (recorded for a reader).
        sequence_length: tokens kept per sentence (longer ones are cut), None when the encoder has no limit.
    """

    tokenizer: str = ""
    sequence_length: int | None = None
    kind = "text"

    def to_dict(self) -> dict:
        return {"kind": "text", "dtype": "string", "shape": [], "tokenizer": self.tokenizer,
                "sequence_length": self.sequence_length, "elements_per_example": self.sequence_length or 1,
                "from_files": "UTF-8 text, one sentence per example, tokenized inside the model"}


def of_text_encoder(encoder) -> TextSpec:
    """The `TextSpec` of a text backbone (`mssl_tf.backbones.text`)."""
    length = getattr(encoder, "sequence_length", None)
    tokenizer = getattr(encoder, "tokenizer_description", "")
    return TextSpec(tokenizer, int(length) if length else None)


def drawings(size: int = 28) -> InputSpec:
    """Omniglot's input: 28×28 grayscale drawings, ink = 255."""
    return InputSpec(size, size, 1, "drawings")


def photos(size: int, channels: int = 3, background=(255, 255, 255)) -> InputSpec:
    """A folder's (or CIFAR's, STL's) input: `size × size × channels` photos or clip art."""
    return InputSpec(size, size, channels, "photos", tuple(background))


def inferred(input_shape) -> InputSpec:
    """The spec of a model known only by its input shape: 28×28×1 is Omniglot's; anything else photos."""
    height, width, channels = (int(value) for value in input_shape[-3:])
    if (height, width, channels) == (28, 28, 1):
        return drawings(28)
    return InputSpec(height, width, channels, "photos")


def image_dimensions(encoded: tf.Tensor) -> tf.Tensor:
    """`[height, width]` int64 of a PNG, JPEG, GIF or BMP from its header, without decoding it.

    InvalidArgumentError (TF Serving: INVALID_ARGUMENT) for any other bytes or a header cut short.
    """
    def prefix(signature: bytes):
        return tf.equal(tf.strings.substr(encoded, 0, len(signature)), signature)

    is_png, is_jpeg, is_gif, is_bmp = (prefix(signature) for signature in (
        PNG_SIGNATURE, JPEG_SIGNATURE, GIF_SIGNATURE, BMP_SIGNATURE))
    known = tf.debugging.assert_equal(is_png | is_jpeg | is_gif | is_bmp, True, message=(
        f"encoded images must be {FORMATS}; this one has none of their signatures"))

    def header_bytes(start: int, count: int):
        whole = tf.debugging.assert_greater_equal(tf.strings.length(encoded), start + count, message=(
            "the image is cut short: it ends inside its header"))
        with tf.control_dependencies([whole]):
            return tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, start, count), tf.uint8), tf.int64)

    def big_endian(values):
        return tf.reduce_sum(values * [1 << 24, 1 << 16, 1 << 8, 1], axis=-1)

    def little_endian(values, count):
        return tf.reduce_sum(values * [1 << (8 * index) for index in range(count)], axis=-1)

    def png_size():
        width, height = tf.unstack(big_endian(tf.reshape(header_bytes(16, 8), [2, 4])))
        return tf.stack([height, width])

    def gif_size():
        width, height = tf.unstack(little_endian(tf.reshape(header_bytes(6, 4), [2, 2]), 2))
        return tf.stack([height, width])

    def bmp_size():
        width, height = tf.unstack(little_endian(tf.reshape(header_bytes(18, 8), [2, 4]), 4))
        height = tf.where(height >= 1 << 31, (1 << 32) - height, height)  # negative height: top-down rows
        return tf.stack([height, width])

    def jpeg_size():
        return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

    with tf.control_dependencies([known]):
        branch = tf.argmax(tf.stack([is_png, is_gif, is_bmp, is_jpeg]), output_type=tf.int32)
        return tf.switch_case(branch, [png_size, gif_size, bmp_size, jpeg_size])


def decode_encoded(encoded: tf.Tensor, spec: InputSpec, max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """One encoded image (a scalar string, any size) → uint8 `spec.shape`, as the data loaders would give it.

    Refuses (InvalidArgumentError) images of more than `max_pixels` pixels before decoding them.
    """
    size = image_dimensions(encoded)
    small_enough = tf.debugging.assert_less_equal(
        tf.reduce_prod(size), tf.constant(max_pixels, tf.int64),
        message=f"the image is larger than the limit of {max_pixels} pixels; scale it down first")
    with tf.control_dependencies([small_enough]):
        if spec.kind == "drawings":
            image = tf.io.decode_image(encoded, channels=1, expand_animations=False)
            return _drawing(image, spec)
        image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    return _photo(image, spec)


def _drawing(image: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    image = tf.image.resize(tf.cast(image, tf.float32), (spec.height, spec.width), method="lanczos3", antialias=True)
    return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(255.0 - image), 0.0, 255.0), tf.uint8), spec.shape)


def _photo(image: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    image = tf.cast(image, tf.float32)
    channels = tf.shape(image)[-1]
    has_alpha = tf.equal(channels % 2, 0)  # 2: gray + alpha, 4: RGBA
    colour_channels = channels - tf.cast(has_alpha, tf.int32)
    colour = image[..., :colour_channels]
    colour = tf.cond(tf.equal(colour_channels, 1), lambda: tf.tile(colour, [1, 1, 3]), lambda: colour[..., :3])
    colour = tf.ensure_shape(colour, [None, None, 3])
    alpha = tf.cond(has_alpha, lambda: image[..., -1:] / 255.0, lambda: tf.ones_like(image[..., :1]))
    background = tf.constant(spec.background, tf.float32)
    rgb = tf.round(colour * alpha + background * (1.0 - alpha))
    if spec.channels == 1:
        rgb = tf.round(tf.reduce_sum(rgb * [0.299, 0.587, 0.114], axis=-1, keepdims=True))
    return _shorter_side_and_centre_crop(rgb, spec)


def _shorter_side_and_centre_crop(image: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    target = min(spec.height, spec.width)
    dimensions = tf.cast(tf.shape(image)[:2], tf.float64)
    scale = target / tf.reduce_min(dimensions)
    resized_size = tf.maximum(tf.cast(tf.round(dimensions * scale), tf.int32), target)
    resized = tf.image.resize(image, resized_size, method="bicubic", antialias=True)
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
    top = (resized_size[0] - spec.height) // 2
    left = (resized_size[1] - spec.width) // 2
    cropped = resized[top: top + spec.height, left: left + spec.width]
    return tf.ensure_shape(tf.cast(cropped, tf.uint8), spec.shape)


def for_dataset(dataset: str, input_shape) -> InputSpec:
    """The spec of a model trained on `dataset` (a `--dataset` value) whose encoder takes `input_shape`."""
    height, width, channels = (int(value) for value in tuple(input_shape)[-3:])
    if dataset.partition(":")[0] == "omniglot":
        return drawings(height)
    return InputSpec(height, width, channels, "photos")


def of_card(card: dict) -> InputSpec:
    """The spec a zoo card records (`input`), or, for cards written before it existed, its dataset's."""
    if card.get("input"):
        return InputSpec.from_dict(card["input"])
    shape = card.get("preprocessing", {}).get("input_shape", [28, 28, 1])
    return for_dataset(card.get("dataset", {}).get("name", "omniglot"), shape)
