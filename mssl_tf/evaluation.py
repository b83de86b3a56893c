"""Few-shot evaluation on a fixed, seeded set of episodes, reported as mean ± 95% confidence interval."""

from __future__ import annotations

import math
import time

import numpy as np
import tensorflow as tf

from mssl_tf.data.episodes import EVALUATION_SEED, EpisodeSpec, episode_dataset
from mssl_tf.methods.episodic import query_accuracy


def confidence_interval(accuracies) -> tuple[float, float]:
    """Mean and 95% half-width (1.96 · std / sqrt(n)) of per-episode accuracies."""
    values = np.asarray(accuracies, dtype=np.float64)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


def episode_accuracies(model, class_images, spec: EpisodeSpec, episodes=600, tasks_per_call=10, seed=EVALUATION_SEED):
    """Query accuracy of `model` on each of the first `episodes` tasks of `seed`.

    Episode i depends only on (seed, i), so grouping `tasks_per_call` tasks per call does not change them.
    """
    tasks_per_call = math.gcd(episodes, tasks_per_call)
    dataset = episode_dataset(class_images, spec, meta_batch=tasks_per_call, seed=seed, num_episodes=episodes)

    @tf.function
    def score(batch):
        _, logits = model.meta_batch_learn(batch, training=False)
        return query_accuracy(logits, batch["query_labels"])

    return np.concatenate([score(batch).numpy() for batch in dataset])


def evaluate(model, class_images, spec: EpisodeSpec, episodes=600, tasks_per_call=10) -> dict:
    """Accuracy (percent) with its 95% interval over the fixed evaluation episodes of `spec`."""
    start = time.perf_counter()
    accuracies = episode_accuracies(model, class_images, spec, episodes, tasks_per_call)
    mean, half_width = confidence_interval(accuracies)
    return {
        "ways": spec.ways,
        "shots": spec.shots,
        "queries": spec.queries,
        "episodes": int(len(accuracies)),
        "accuracy": round(100.0 * mean, 2),
        "ci95": round(100.0 * half_width, 2),
        "evaluation_seconds": round(time.perf_counter() - start, 1),
    }


def adaptation_curve(model, class_images, spec: EpisodeSpec, steps=(0, 1, 5), episodes=600, tasks_per_call=10,
                     seed=EVALUATION_SEED) -> list[dict]:
    """Accuracy after each number of adaptation steps on the same fixed episodes: inner-loop steps (MAML family,
    hyper-network fine-tuning) or memory write passes (`MemoryNetwork`; 0 leaves the memory empty).

    Returns:
        One dict per entry of `steps`: `{"steps", "accuracy", "ci95", "episodes", "evaluation_seconds"}`.
    """
    from mssl_tf.methods.meta_ssl import adaptation_steps

    curve = []
    for count in steps:
        start = time.perf_counter()
        with adaptation_steps(model, count):
            accuracies = episode_accuracies(model, class_images, spec, episodes, tasks_per_call, seed)
        mean, half_width = confidence_interval(accuracies)
        curve.append({"steps": int(count), "accuracy": round(100.0 * mean, 2), "ci95": round(100.0 * half_width, 2),
                      "episodes": int(len(accuracies)), "evaluation_seconds": round(time.perf_counter() - start, 1)})
    return curve
