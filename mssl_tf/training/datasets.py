"""Training data for both drivers, from any global step on: the one choice between labeled episodes,
unsupervised tasks and multi-view batches, made from the method's `BATCHES` and the run's `tasks`.

Every dataset here is deterministic given the seed and starts at a step without drawing the skipped batches
(episode `i` depends only on `(seed, i)`), so a resumed run sees exactly what an uninterrupted one would have.
The multi-worker driver takes `dataset_fn(input_context, start_step)` functions that give each input pipeline
the rows of its own replicas (`episode_dataset_fn`, `global_batch_dataset_fn`).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from mssl_tf.data import unsupervised_tasks
from mssl_tf.data.episodes import EpisodeSpec, sample_episode
from mssl_tf.data.modality import as_constant
from mssl_tf.data.views import flatten_classes, multi_view_dataset
from mssl_tf.training.clusters import cluster_assignments, uses_clusters
from mssl_tf.training.config import TrainConfig, batches, check, is_unsupervised, view_preset

DatasetFunction = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]


def episode_spec(config: TrainConfig) -> EpisodeSpec:
    return EpisodeSpec(config.ways, config.shots, config.queries)


def training_dataset(config: TrainConfig, class_images, start_step: int = 0) -> tf.data.Dataset:
    """The run's global batches from step `start_step` on: labeled episodes, unsupervised tasks or views."""
    if batches(config) == "views":
        return views_dataset(config, class_images, start_step)
    if is_unsupervised(config):
        return task_dataset(config, class_images, episode_spec(config), start_step)
    return episodes_from_step(class_images, episode_spec(config), config.meta_batch, config.seed, start_step)


def distributed_dataset_fn(config: TrainConfig, class_images) -> DatasetFunction:
    """`training_dataset` for the multi-worker driver: each input pipeline draws only its replicas' rows."""
    if batches(config) == "episodes" and not is_unsupervised(config):
        return episode_dataset_fn(class_images, episode_spec(config), config.meta_batch, config.seed)
    return global_batch_dataset_fn(lambda start: training_dataset(config, class_images, start))


def views_dataset(config: TrainConfig, class_images, start_step: int = 0) -> tf.data.Dataset:
    """Multi-view batches of the flattened split, from batch `start_step` on; labels only for the probe."""
    images, labels = flatten_classes(class_images)
    return multi_view_dataset(images, config.batch_size, view_preset(config), seed=config.seed,
                              labels=labels if config.probe else None, first_batch=start_step)


def task_dataset(config: TrainConfig, class_images, spec: EpisodeSpec, start_step: int = 0) -> tf.data.Dataset:
    """Meta-batches of unsupervised tasks from `class_images` with the labels (the class axis) dropped."""
    check(config)
    images = unsupervised_tasks.unlabeled_images(class_images)
    options = config.task_options
    assignments = cluster_assignments(config, images) if uses_clusters(config) else None
    mixture = options.get("mixture")
    maker = unsupervised_tasks.task_maker(
        config.tasks, images, spec, view_preset=view_preset(config), assignments=assignments,
        mixture=mixture.split(",") if isinstance(mixture, str) else mixture,
        mixture_weights=options.get("mixture_weights"), original_support=bool(options.get("original_support", False)),
    )
    return unsupervised_tasks.task_dataset(maker, config.meta_batch, config.seed,
                                           first_episode=start_step * config.meta_batch)


def _episodes(class_images, spec: EpisodeSpec, seed: int, batch: int, episode_index) -> tf.data.Dataset:
    images = as_constant(class_images)

    def make(position):
        return sample_episode(images, spec, tf.stack([tf.constant(seed, tf.int64), episode_index(position)]))

    dataset = tf.data.Dataset.counter().map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def episodes_from_step(class_images, spec: EpisodeSpec, meta_batch: int, seed: int, start_step: int = 0):
    """`episode_dataset(class_images, spec, meta_batch, seed)` from its element `start_step` on, without
    drawing the skipped episodes (episode `i` depends only on `(seed, i)`)."""
    first = start_step * meta_batch
    return _episodes(class_images, spec, seed, meta_batch, lambda position: position + first)


def episode_dataset_fn(class_images, spec: EpisodeSpec, meta_batch: int, seed: int) -> DatasetFunction:
    """Per-replica episode batches whose union at every step is the global batch of `episode_dataset`.

    The global batch of step `s` holds episodes `s * meta_batch ... (s + 1) * meta_batch - 1`; replica `r` gets
    the `r`-th contiguous slice of `meta_batch / replicas` of them. Each input pipeline (one per worker) draws
    only the episodes of its own replicas.
    """

    def dataset_fn(context: tf.distribute.InputContext, start_step: int) -> tf.data.Dataset:
        per_replica = _per_replica(meta_batch, context)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        per_pipeline = local_replicas * per_replica  # episodes this pipeline draws per step
        offset = context.input_pipeline_id * per_pipeline
        first = start_step * per_pipeline

        def episode_index(position):
            position = position + first
            return (position // per_pipeline) * meta_batch + offset + position % per_pipeline

        return _episodes(class_images, spec, seed, per_replica, episode_index)

    return dataset_fn


def global_batch_dataset_fn(make_global_dataset: Callable[[int], tf.data.Dataset]) -> DatasetFunction:
    """Adapts any deterministic dataset of global batches to the driver.

    Args:
        make_global_dataset: `start_step` → dataset whose elements are the global batches of steps
            `start_step, start_step + 1, ...` (nested tensors with a static leading batch axis). Every worker
            builds it and keeps the rows of its own replicas, so it must not depend on the worker.

    Returns:
        A `dataset_fn(input_context, start_step)` for `DistributedTrainer`.
    """

    def dataset_fn(context: tf.distribute.InputContext, start_step: int) -> tf.data.Dataset:
        dataset = make_global_dataset(start_step)
        global_batch = tf.nest.flatten(dataset.element_spec)[0].shape[0]
        if global_batch is None:
            raise ValueError("The global batches need a static batch size: batch with drop_remainder=True")
        per_replica = _per_replica(global_batch, context)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local_replicas * per_replica

        def local_rows(*batch):
            batch = batch[0] if len(batch) == 1 else batch
            mine = tf.nest.map_structure(
                lambda tensor: tf.reshape(
                    tensor[first : first + local_replicas * per_replica],
                    [local_replicas, per_replica, *tensor.shape[1:]],
                ),
                batch,
            )
            return tf.data.Dataset.from_tensor_slices(mine)

        return dataset.flat_map(local_rows)

    return dataset_fn


def _per_replica(global_batch: int, context: tf.distribute.InputContext) -> int:
    if global_batch % context.num_replicas_in_sync:
        raise ValueError(
            f"The global batch (meta-batch) of {global_batch} does not divide across "
            f"{context.num_replicas_in_sync} replicas; use a multiple of {context.num_replicas_in_sync}"
        )
    return global_batch // context.num_replicas_in_sync
