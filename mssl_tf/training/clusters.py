"""CACTUs task labels: k-means partitions of a trained encoder's embeddings, cached in the run's directory.

`--tasks clusters|mixture --cluster-encoder RUN` makes classes of the clusters; the partitions are computed once
per (encoder, settings, seed, images) and kept in `<output>/cluster_partitions.npz` with the seconds they took,
which the run's record counts as training cost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mssl_tf.data import unsupervised_tasks
from mssl_tf.training.artifacts import load_trained, model_file, sha256
from mssl_tf.training.config import CLUSTER_DEFAULTS, TrainConfig


def uses_clusters(config: TrainConfig) -> bool:
    return bool(config.cluster_encoder) and config.tasks in ("clusters", "mixture")


def cache_path(config: TrainConfig) -> Path:
    return Path(config.output or ".") / "cluster_partitions.npz"


def cluster_assignments(config: TrainConfig, images) -> np.ndarray:
    """k-means partitions `[partitions, N]` of the cluster encoder's embeddings, cached in the output directory."""
    settings = {key: int(config.task_options.get(key, value)) for key, value in CLUSTER_DEFAULTS.items()}
    encoder_file = model_file(config.cluster_encoder)
    key = {**settings, "encoder": str(encoder_file.resolve()), "encoder_sha256": sha256(encoder_file),
           "seed": config.seed, "images": len(images)}
    cache = cache_path(config)
    if cache.is_file():
        stored = np.load(cache)
        if json.loads(str(stored["key"])) == key:
            return stored["assignments"]
    start = time.perf_counter()
    encoder, _ = load_trained(encoder_file)
    embeddings = unsupervised_tasks.encoder_embeddings(encoder, images)
    print(f"clustering {len(images)} embeddings: {settings['partitions']} partitions of {settings['clusters']} "
          "clusters", flush=True)
    assignments = unsupervised_tasks.cluster_partitions(embeddings, settings["clusters"], settings["partitions"],
                                                        seed=config.seed, iterations=settings["iterations"])
    seconds = round(time.perf_counter() - start, 1)
    print(f"clustered in {seconds} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, assignments=assignments, key=json.dumps(key), seconds=seconds)
    return assignments


def clustering_seconds(config: TrainConfig) -> float | None:
    """Seconds the run's k-means partitions took (embedding the images included), from the cache; None if none."""
    cache = cache_path(config)
    if not (uses_clusters(config) and cache.is_file()):
        return None
    stored = np.load(cache)
    return float(stored["seconds"]) if "seconds" in stored else None
