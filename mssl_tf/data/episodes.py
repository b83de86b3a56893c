"""N-way K-shot Q-query episodes as a `tf.data` pipeline.

Episode `i` of a pipeline with seed `s` is drawn with stateless random ops keyed by `(s, i)`, so the
pipeline is deterministic for a seed whatever the parallelism, and a fixed evaluation set is simply the
first `n` episodes of a seed.

An element is a dict of one meta-batch of tasks:
    support_images [tasks, ways*shots, H, W, C] float32 in [0, 1] (C = 1 for class images without a channel axis),
                   or [tasks, ways*shots] tf.string for sentences (the keys say "images" for both)
    support_labels [tasks, ways*shots] int32, class-major (0,0,...,1,1,...)
    query_images   [tasks, ways*queries, H, W, C]
    query_labels   [tasks, ways*queries] int32
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mssl_tf.data.modality import as_constant, model_input

EVALUATION_SEED = 20170315  # every method is scored on the episodes of this seed


@dataclass(frozen=True)
class EpisodeSpec:
    ways: int
    shots: int
    queries: int

    def __post_init__(self):
        if min(self.ways, self.shots, self.queries) < 1:
            raise ValueError(f"ways, shots and queries must be positive, got {self}")


def sample_episode(class_images: tf.Tensor, spec: EpisodeSpec, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """One task from `class_images` (uint8 `[classes, drawings, H, W]` or `[classes, drawings, H, W, C]`, or
    sentences `[classes, per class]` of `tf.string`), keyed by a stateless `seed` pair."""
    num_classes = tf.shape(class_images)[0]
    drawings = tf.shape(class_images)[1]
    class_seed, image_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    classes = tf.argsort(tf.random.stateless_uniform([num_classes], class_seed))[: spec.ways]
    per_class = spec.shots + spec.queries
    picks = tf.argsort(tf.random.stateless_uniform([spec.ways, drawings], image_seed), axis=1)[:, :per_class]
    images = model_input(tf.gather(tf.gather(class_images, classes), picks, batch_dims=1))  # [ways, per class, ...]
    if images.shape.rank == 4:
        images = images[..., tf.newaxis]
    example_shape = images.shape[2:]
    labels = tf.range(spec.ways, dtype=tf.int32)[:, tf.newaxis]
    return {
        "support_images": tf.reshape(images[:, : spec.shots], [spec.ways * spec.shots, *example_shape]),
        "support_labels": tf.reshape(tf.tile(labels, [1, spec.shots]), [-1]),
        "query_images": tf.reshape(images[:, spec.shots :], [spec.ways * spec.queries, *example_shape]),
        "query_labels": tf.reshape(tf.tile(labels, [1, spec.queries]), [-1]),
    }


def episode_dataset(
    class_images: np.ndarray,
    spec: EpisodeSpec,
    meta_batch: int = 1,
    seed: int = 0,
    num_episodes: int | None = None,
) -> tf.data.Dataset:
    """A dataset of meta-batches of episodes.

    Args:
        class_images: uint8 `[classes, drawings, H, W]` or `[classes, drawings, H, W, C]`, one row per class.
        spec: ways, shots and queries of every task.
        meta_batch: tasks per element.
        seed: episodes are a pure function of `(seed, episode index)`.
        num_episodes: number of tasks in total; `None` repeats forever.

    Returns:
        `tf.data.Dataset` of dicts (see module docstring), prefetched.
    """
    if spec.ways > class_images.shape[0]:
        raise ValueError(f"{spec.ways}-way tasks need at least {spec.ways} classes, got {class_images.shape[0]}")
    if spec.shots + spec.queries > class_images.shape[1]:
        raise ValueError(
            f"{spec.shots} shots + {spec.queries} queries exceed the {class_images.shape[1]} drawings or images per "
            "class"
        )
    images = as_constant(class_images)
    indices = tf.data.Dataset.range(num_episodes) if num_episodes is not None else tf.data.Dataset.counter()

    def make(index):
        return sample_episode(images, spec, tf.stack([tf.constant(seed, tf.int64), index]))

    dataset = indices.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(meta_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def evaluation_episodes(class_images: np.ndarray, spec: EpisodeSpec, num_episodes: int = 600) -> tf.data.Dataset:
    """The fixed evaluation set: the first `num_episodes` tasks of `EVALUATION_SEED`, one per element."""
    return episode_dataset(class_images, spec, meta_batch=1, seed=EVALUATION_SEED, num_episodes=num_episodes)
