"""Multi-view augmentation: deterministic for a seed, different across seeds and examples; exact transformation ops."""

import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.data.views import (
    TRANSFORMATIONS,
    ViewConfig,
    apply_transformation,
    flatten_classes,
    gaussian_blur,
    make_views,
    multi_view_dataset,
    transformation_batch,
)


@pytest.fixture(scope="module")
def glyphs(train_images):
    images, labels = flatten_classes(train_images[:10])
    return images, labels


def first(dataset):
    return {key: value.numpy() for key, value in next(iter(dataset)).items()}


@pytest.mark.parametrize("preset", ["omniglot", "omniglot_elastic", "crop_flip"])
def test_views_are_deterministic_for_a_seed_and_differ_across_seeds_examples_and_views(glyphs, preset):
    images, _ = glyphs
    batch = first(multi_view_dataset(images, 16, preset, seed=5))
    again = first(multi_view_dataset(images, 16, preset, seed=5))
    other_seed = first(multi_view_dataset(images, 16, preset, seed=6))
    np.testing.assert_array_equal(batch["views"], again["views"])
    assert batch["views"].shape == (16, 2, 28, 28, 1) and batch["views"].dtype == np.float32
    assert 0.0 <= batch["views"].min() and batch["views"].max() <= 1.0 and batch["views"].max() > 0.5
    assert not np.allclose(batch["views"], other_seed["views"])
    assert not np.allclose(batch["views"][:, 0], batch["views"][:, 1])  # two views of an example differ
    assert "labels" not in batch  # unlabeled unless asked for


def test_views_depend_on_the_example_index_not_the_batching(glyphs):
    images, labels = glyphs
    small = multi_view_dataset(images, 4, "omniglot", seed=2, labels=labels)
    large = first(multi_view_dataset(images, 8, "omniglot", seed=2, labels=labels))
    stacked = [first(small.skip(index).take(1)) for index in range(2)]
    np.testing.assert_array_equal(np.concatenate([b["views"] for b in stacked]), large["views"])
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in stacked]), large["labels"])
    # The same image at another stream position gets other views.
    image = tf.constant(images[:1, ..., None] / 255.0, tf.float32)
    first_position = make_views(image, [0], "omniglot", seed=2).numpy()
    second_position = make_views(image, [1], "omniglot", seed=2).numpy()
    assert not np.allclose(first_position, second_position)


def test_an_epoch_visits_every_image_once_and_identity_views_are_the_images(glyphs):
    images, labels = glyphs
    count = len(images)  # 200
    batch = first(multi_view_dataset(images, count, "none", seed=1, labels=np.arange(count)))
    assert sorted(batch["labels"]) == list(range(count))
    np.testing.assert_allclose(batch["views"][:, 0, ..., 0], images[batch["labels"]] / 255.0, atol=1e-6)
    np.testing.assert_allclose(batch["views"][:, 1], batch["views"][:, 0], atol=1e-6)


def test_a_certain_horizontal_flip_is_the_mirror_image(glyphs):
    images, _ = glyphs
    flipped = first(multi_view_dataset(images[:4], 4, ViewConfig(horizontal_flip=1.0), seed=0,
                                       labels=np.arange(4)))
    np.testing.assert_allclose(flipped["views"][:, 0, ..., 0], images[flipped["labels"], :, ::-1] / 255.0, atol=1e-5)


def test_rgb_preset_on_generated_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    batch = first(multi_view_dataset(images, 6, "rgb", views=3, seed=4, labels=np.arange(12)))
    assert batch["views"].shape == (6, 3, 32, 32, 3)
    assert 0.0 <= batch["views"].min() and batch["views"].max() <= 1.0
    assert not np.allclose(batch["views"][:, 0], batch["views"][:, 1])
    np.testing.assert_array_equal(batch["views"], first(multi_view_dataset(images, 6, "rgb", views=3, seed=4,
                                                                           labels=np.arange(12)))["views"])


def test_gaussian_blur_keeps_constants_and_mass():
    constant = tf.fill([2, 9, 9, 3], 0.25)
    np.testing.assert_allclose(gaussian_blur(constant, tf.constant([0.5, 2.0])), constant, atol=1e-6)
    impulse = np.zeros([1, 40, 40, 1], np.float32)
    impulse[0, 20, 20, 0] = 1.0
    blurred = gaussian_blur(tf.constant(impulse), tf.constant([1.0])).numpy()
    assert blurred.sum() == pytest.approx(1.0, rel=1e-5) and blurred[0, 20, 20, 0] < 0.5


def test_transformation_ops_are_exact_on_a_small_array():
    image = tf.constant(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
    grid = image.numpy()[0, ..., 0]
    expected = {
        "rot0": grid,
        "rot90": np.rot90(grid, 1),  # counter-clockwise
        "rot180": grid[::-1, ::-1],
        "rot270": np.rot90(grid, 3),
        "hflip": grid[:, ::-1],
        "vflip": grid[::-1],
        "downsample": np.kron(np.array([[2.5, 4.5], [10.5, 12.5]]), np.ones([2, 2])),  # 2x2 means, repeated
    }
    assert set(expected) == set(TRANSFORMATIONS)
    for name, values in expected.items():
        np.testing.assert_allclose(apply_transformation(image, name).numpy()[0, ..., 0], values, err_msg=name)
    np.testing.assert_array_equal(np.rot90(grid, 1), [[3, 7, 11, 15], [2, 6, 10, 14], [1, 5, 9, 13], [0, 4, 8, 12]])
    batch, labels = transformation_batch(tf.concat([image, image + 1], 0), ["rot0", "vflip"])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    np.testing.assert_allclose(batch.numpy()[3, ..., 0], grid[::-1] + 1)
    with pytest.raises(ValueError, match="registered"):
        apply_transformation(image, "rot45")
