"""Augmentation parameters against their configured ranges: the drawn values (`view_parameters`), the transforms
they become (`geometric_transforms`) and the views the unsupervised task constructors actually make.

A parameter drawn from the wrong range (too narrow, too wide, off-centre, a probability ignored) fails here: every
parameter must stay inside its range and also come close to both ends of it.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.data import EpisodeSpec
from mssl_tf.data import unsupervised_tasks as tasks
from mssl_tf.data.views import SCALAR_PARAMETERS, ViewConfig, geometric_transforms, split_parameters, view_parameters

DRAWS = 2000
CONFIG = ViewConfig(crop_scale=(0.3, 0.7), crop_ratio=(0.5, 2.0), rotation_degrees=20.0, shear=0.3, translate=0.1,
                    horizontal_flip=0.3, elastic_alpha=1.0, color_jitter=0.6, brightness=0.2, contrast=0.3,
                    saturation=0.5, hue=0.05, grayscale=0.25, blur=0.4, blur_sigma=(0.5, 1.5))
RANGES = {
    "scale": (0.3, 0.7),
    "log_ratio": (math.log(0.5), math.log(2.0)),
    "rotation": (-math.radians(20.0), math.radians(20.0)),
    "shear": (-0.3, 0.3),
    "translate_x": (-0.1, 0.1),
    "translate_y": (-0.1, 0.1),
    "brightness": (-0.2, 0.2),
    "contrast": (0.7, 1.3),
    "saturation": (0.5, 1.5),
    "hue": (-0.05, 0.05),
    "sigma": (0.5, 1.5),
}
PROBABILITIES = {"flip": 0.3, "jitter": 0.6, "gray": 0.25, "blur": 0.4}  # applied when the uniform draw is below


def draws(config=CONFIG, count=DRAWS, seed=0):
    """`count` parameter vectors `[count, P]` from independent stateless seeds."""
    seeds = tf.random.experimental.stateless_split(tf.constant([seed, 1], tf.int64), count)
    draw = tf.function(lambda seeds: tf.map_fn(lambda pair: view_parameters(pair, config), seeds,
                                               fn_output_signature=tf.float32))
    return draw(seeds)


def assert_fills(values, low, high, name):
    """Inside [low, high] and within 3 % of the width from each end."""
    width = high - low
    assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6, f"{name} leaves [{low}, {high}]"
    assert values.min() < low + 0.03 * width and values.max() > high - 0.03 * width, (
        f"{name} spans only [{values.min():.4f}, {values.max():.4f}] of [{low}, {high}]")


def test_every_drawn_parameter_fills_its_configured_range():
    scalars, field = split_parameters(draws(), CONFIG)
    scalars = {name: values.numpy() for name, values in scalars.items()}
    assert set(RANGES) | set(PROBABILITIES) | {"crop_x", "crop_y"} == set(SCALAR_PARAMETERS)
    for name, (low, high) in RANGES.items():
        assert_fills(scalars[name], low, high, name)
    for name in ("crop_x", "crop_y", *PROBABILITIES):
        assert_fills(scalars[name], 0.0, 1.0, name)
    assert_fills(field.numpy().ravel(), -1.0, 1.0, "elastic field")
    # Each probability is the share of draws below it (binomial standard deviation about 0.011 for 2000 draws).
    for name, probability in PROBABILITIES.items():
        assert np.mean(scalars[name] < probability) == pytest.approx(probability, abs=0.04), name


def test_a_zero_range_draws_the_identity():
    scalars, _ = split_parameters(draws(ViewConfig(), count=200), ViewConfig())
    for name in ("rotation", "shear", "translate_x", "translate_y"):
        np.testing.assert_array_equal(scalars[name].numpy(), 0.0, err_msg=name)
    np.testing.assert_allclose(scalars["scale"].numpy(), 1.0)
    np.testing.assert_allclose(scalars["log_ratio"].numpy(), 0.0, atol=1e-7)


def linear_parts(config, count=DRAWS):
    """The 2×2 linear parts and the offsets of the transforms of `count` draws on a 28×28 image."""
    scalars, _ = split_parameters(draws(config, count), config)
    transforms = geometric_transforms(scalars, 28, 28, config).numpy()
    return transforms[:, [0, 1, 3, 4]].reshape(-1, 2, 2), transforms[:, [2, 5]], scalars


def test_transforms_crop_the_configured_area_and_flip_with_the_configured_probability():
    """|det A| = crop area / image area (rotation and shear have determinant 1), negative when flipped."""
    linear, _, scalars = linear_parts(CONFIG)
    determinants = np.linalg.det(linear)
    area = np.abs(determinants)
    # The crop's sides are clipped to the image, so the area is at most the drawn scale (and here at least 0.3).
    assert np.all(area <= scalars["scale"].numpy() + 1e-5)
    assert_fills(area, 0.3, 0.7, "crop area")
    flipped = determinants < 0
    np.testing.assert_array_equal(flipped, scalars["flip"].numpy() < 0.3)
    assert np.mean(flipped) == pytest.approx(0.3, abs=0.04)


def test_transforms_rotate_and_translate_within_their_ranges():
    rotation_only = ViewConfig(rotation_degrees=20.0)
    linear, _, _ = linear_parts(rotation_only)
    np.testing.assert_allclose(np.linalg.det(linear), 1.0, atol=1e-5)
    angles = np.degrees(np.arctan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert_fills(angles, -20.0, 20.0, "rotation (degrees)")
    translation_only = ViewConfig(translate=0.1)
    linear, offsets, _ = linear_parts(translation_only)
    np.testing.assert_allclose(linear, np.broadcast_to(np.eye(2), linear.shape), atol=1e-6)
    assert_fills(offsets.ravel(), -2.8, 2.8, "translation (pixels)")  # ±0.1 of 28 pixels


# === The views the augmentation-task constructor makes ===
def task_views(image, config, count_tasks=10):
    """Every support and query view of `count_tasks` 5-way 1-shot 3-query augmentation tasks of copies of `image`."""
    images = np.repeat(image[np.newaxis], 5, axis=0)
    maker = tasks.task_maker("augmentation", images, EpisodeSpec(5, 1, 3), view_preset=config)
    views = []
    for batch in tasks.task_dataset(maker, meta_batch=1, seed=2, num_episodes=count_tasks):
        views.extend([batch["support_images"][0, ..., 0].numpy(), batch["query_images"][0, ..., 0].numpy()])
    return np.concatenate(views)


def moments(views):
    """Centroids `[n, 2]` (x, y) and principal-axis angles `[n]` (degrees) of the views' intensity."""
    rows, columns = np.mgrid[0:28, 0:28]
    mass = views.sum(axis=(1, 2))
    x = (views * columns).sum(axis=(1, 2)) / mass
    y = (views * rows).sum(axis=(1, 2)) / mass
    dx, dy = columns[None] - x[:, None, None], rows[None] - y[:, None, None]
    xx, yy, xy = ((views * d).sum(axis=(1, 2)) / mass for d in (dx * dx, dy * dy, dx * dy))
    return np.stack([x, y], axis=1), np.degrees(0.5 * np.arctan2(2 * xy, xx - yy))


def test_augmentation_tasks_translate_their_views_within_the_configured_range():
    image = np.zeros([28, 28], np.uint8)
    image[12:16, 12:16] = 255  # a blob centred on the image
    centroids, _ = moments(task_views(image, ViewConfig(translate=0.1)))
    shifts = centroids - 13.5
    assert np.abs(shifts).max() <= 2.8 + 0.05
    assert np.abs(shifts).max() > 2.3 and (shifts < -1.5).any() and (shifts > 1.5).any()


def test_augmentation_tasks_rotate_their_views_within_the_configured_range():
    image = np.zeros([28, 28], np.uint8)
    image[13:15, 6:22] = 255  # a horizontal bar through the centre
    _, angles = moments(task_views(image, ViewConfig(rotation_degrees=20.0)).astype(np.float64))
    assert np.abs(angles).max() <= 20.0 + 1.0
    assert angles.min() < -15.0 and angles.max() > 15.0
    _, unrotated = moments(task_views(image, ViewConfig(), count_tasks=1).astype(np.float64))
    np.testing.assert_allclose(unrotated, 0.0, atol=1e-6)
