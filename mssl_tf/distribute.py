"""Strategies by name and from the environment, chief detection, and batches divided across replicas.

`default` runs on one device, `mirrored` over the local GPUs (or logical CPUs for testing), and `multiworker`
over the hosts listed in `TF_CONFIG` (see docs/multiworker.md). A global batch (the meta-batch of tasks of one
optimizer step) is divided evenly across every replica of every worker.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'
)


def split_cpu(count: int) -> list:
    """Splits the physical CPU into `count` logical devices. Call before TensorFlow initializes its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing is None or len(existing) != count:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return tf.config.list_logical_devices("CPU")


def cluster_from_environment() -> dict:
    """The parsed `TF_CONFIG` of a multi-worker run, checked for a cluster and this process's task.

    Raises:
        ValueError: `TF_CONFIG` is unset, not JSON, or lacks `cluster` / `task`, or the task is not in the cluster.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        raise ValueError(
            "--strategy multiworker reads the cluster from the TF_CONFIG environment variable, which is not set. "
            f"Set it on every host, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (index 1 on the second host); "
            "see docs/multiworker.md"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' entry, got {text!r}; e.g. {TF_CONFIG_EXAMPLE}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker") or task_type not in cluster or index >= len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG's task {task} is not a 'chief' or 'worker' listed in its cluster {cluster}"
        )
    return config


def get_strategy(name: str = "default", devices: int | None = None) -> tf.distribute.Strategy:
    """A strategy by name.

    Args:
        name: `default` (no distribution), `mirrored` (local GPUs, or `devices` logical CPUs when there is no
            GPU) or `multiworker` (`MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG`: every local GPU
            of every worker, or the CPU of each worker when it has no GPU).
        devices: logical CPU devices for `mirrored` on a machine without GPU.

    Returns:
        The strategy; build and compile the model inside its `scope()`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        logical = split_cpu(devices or 2)
        return tf.distribute.MirroredStrategy([device.name for device in logical])
    if name == "multiworker":
        if devices is not None:
            raise ValueError("--devices splits one CPU for --strategy mirrored; a multi-worker run uses the local "
                             "GPUs of every worker (or one CPU per worker), so drop --devices")
        cluster_from_environment()
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver()
        )
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}")


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        resolver and resolver.cluster_spec().jobs
    )


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """This process's `(task type, task index)` in the cluster; `(None, 0)` outside a multi-worker run."""
    if not is_multi_worker(strategy):
        return None, 0
    resolver = strategy.cluster_resolver
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes checkpoints and logs: the `chief`, else worker 0, else a single process."""
    task_type, index = task(strategy)
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in strategy.cluster_resolver.cluster_spec().jobs


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """Number of processes taking part in training (1 outside a multi-worker run)."""
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)


def write_directory(directory: str | Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes what only the chief keeps: `directory` on the chief, a temporary one elsewhere.

    Every worker of a `MultiWorkerMirroredStrategy` run must take part in saving (saving reads variables
    collectively), but only the chief's copy is kept: the others write under `directory/.workers/<type>_<index>`
    and delete it with `remove_worker_directory` afterwards.
    """
    directory = Path(directory)
    if is_chief(strategy):
        return directory
    task_type, index = task(strategy)
    return directory / ".workers" / f"{task_type}_{index}"


def remove_worker_directory(directory: str | Path, strategy: tf.distribute.Strategy) -> None:
    """Deletes a non-chief's temporary write directory (see `write_directory`); does nothing on the chief."""
    if not is_chief(strategy):
        shutil.rmtree(write_directory(directory, strategy), ignore_errors=True)


def per_replica_batch(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """The part of a global batch each replica computes.

    Raises:
        ValueError: the global batch does not divide evenly across the replicas of every worker.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(
            f"The global batch (meta-batch) of {global_batch} does not divide across {replicas} replicas "
            f"({worker_count(strategy)} workers); use a meta-batch that is a multiple of {replicas}"
        )
    return global_batch // replicas
