"""The in-graph decoder of encoded files (what `embed_png` / `few_shot_png` run) against the folder loader."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mssl_tf import input_spec
from mssl_tf.data.image_folder import FolderSettings, decode_image

FORMATS = [("PNG", "RGBA"), ("PNG", "LA"), ("PNG", "L"), ("PNG", "RGB"), ("PNG", "P"), ("JPEG", "RGB"),
           ("GIF", "P"), ("BMP", "RGB")]
SIZES = [(53, 37), (37, 53), (200, 90), (20, 20)]  # width, height: both orientations, downscale and upscale


def textured(size, seed=0) -> Image.Image:
    """A smooth colour gradient with a soft transparent region (what clip art looks like), RGBA."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    red = 127 + 120 * np.sin(x / width * rng.uniform(2, 6))
    green = 127 + 120 * np.cos(y / height * rng.uniform(2, 6))
    blue = 255 * x * y / (width * height)
    alpha = np.clip(255 * (1.5 - 2 * np.hypot(x / width - 0.5, y / height - 0.5) * 1.5), 0, 255)
    return Image.fromarray(np.stack([red, green, blue, alpha], -1).astype(np.uint8), "RGBA")


def encoded(image: Image.Image, file_format: str, mode: str) -> bytes:
    buffer = io.BytesIO()
    converted = image.convert(mode) if mode != "P" else image.convert("RGB").convert("P")
    converted.save(buffer, file_format)
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("file_format,mode", FORMATS)
def test_graph_decoding_matches_the_folder_loader(file_format, mode, channels, tmp_path):
    spec = input_spec.photos(32, channels)
    settings = FolderSettings(image_size=32, channels=channels, min_images=1, images_per_class=1)
    for index, size in enumerate(SIZES):
        data = encoded(textured(size, index), file_format, mode)
        path = tmp_path / f"image{index}.{file_format.lower()}"
        path.write_bytes(data)
        expected = decode_image(path, settings).astype(np.int64)
        got = input_spec.decode_encoded(tf.constant(data), spec).numpy().astype(np.int64)
        assert got.shape == expected.shape == (32, 32, channels)
        difference = np.abs(got - expected)
        # TensorFlow's bicubic and JPEG decoder are not Pillow's: about a grey level on average (measured
        # 0.1-1.0), a few edge pixels more.
        assert difference.mean() < 2.0, (file_format, mode, size, difference.mean())
        assert np.percentile(difference, 99) <= 24, (file_format, mode, size)


def test_transparency_is_composited_over_the_background():
    image = Image.new("RGBA", (40, 40), (10, 200, 30, 0))
    image.paste((10, 200, 30, 255), (0, 0, 20, 40))  # opaque left half
    data = encoded(image, "PNG", "RGBA")
    white = input_spec.decode_encoded(tf.constant(data), input_spec.photos(20)).numpy()
    assert tuple(white[10, 2]) == (10, 200, 30) and tuple(white[10, 17]) == (255, 255, 255)
    black = input_spec.decode_encoded(tf.constant(data), input_spec.photos(20, background=(0, 0, 0))).numpy()
    assert tuple(black[10, 17]) == (0, 0, 0)


def test_the_header_gives_the_size_of_every_format():
    for file_format, mode in FORMATS:
        data = encoded(textured((61, 23)), file_format, mode)
        np.testing.assert_array_equal(input_spec.image_dimensions(tf.constant(data)).numpy(), [23, 61])


def test_refuses_unknown_bytes_and_images_over_the_pixel_limit():
    with pytest.raises(tf.errors.InvalidArgumentError, match="PNG, JPEG, GIF or BMP"):
        input_spec.decode_encoded(tf.constant(b"RIFF\x00\x00\x00\x00WEBPVP8 "), input_spec.photos(8))
    data = encoded(textured((300, 300)), "BMP", "RGB")
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 1000 pixels"):
        input_spec.decode_encoded(tf.constant(data), input_spec.photos(8), max_pixels=1000)


def test_specs_round_trip_and_follow_the_dataset():
    spec = input_spec.photos(32, 1, background=(0, 0, 0))
    assert input_spec.InputSpec.from_dict(spec.to_dict()) == spec
    assert input_spec.for_dataset("omniglot", (28, 28, 1)).kind == "drawings"
    assert input_spec.for_dataset("imagefolder:/data", (32, 32, 3)) == input_spec.photos(32, 3)
    assert input_spec.of_card({"dataset": {"name": "omniglot"}}) == input_spec.drawings(28)
    with pytest.raises(ValueError, match="channels"):
        input_spec.InputSpec(8, 8, 3, "drawings")
