"""What a run records: `train.json` (both drivers, and the untrained floor) and every evaluation record
(few-shot, frozen-encoder, adaptation curve), all written by `mssl_tf.results` with one hardware description.

`labels_used` is never claimed lower than is known: a run that starts from a model (`--init-from`,
`--cluster-encoder`) without a record counts as having used labels.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from pathlib import Path

import tensorflow as tf

from mssl_tf import results
from mssl_tf.data.class_splits import describe
from mssl_tf.data.views import describe_views
from mssl_tf.training.artifacts import model_file, sha256, source_summary
from mssl_tf.training.clusters import clustering_seconds
from mssl_tf.training.config import TrainConfig, batches, dataset_options, is_unsupervised, view_preset

PACKAGE_DIRECTORY = Path(__file__).parents[1]


def hardware() -> str:
    """The machine a number was measured on, e.g. `x86_64, 2 CPU cores, no GPU`."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {f'{gpus} GPU' if gpus else 'no GPU'}"


# === train.json ===
def data_summary(config: TrainConfig) -> dict:
    """What `train.json` records about the training data, `labels_used` first."""
    summary = {"labels_used": True}
    if config.dataset != "omniglot":
        summary["data"] = describe(config.dataset, dataset_options(config))
    if batches(config) == "views":
        # Labels reach a view-trained model only through the online probe's stop-gradient classifier.
        summary.update(labels_used=bool(config.probe), labels_used_by_encoder=False, batch_size=config.batch_size,
                       views=describe_views(view_preset(config)))
    if is_unsupervised(config) or config.init_from:
        summary.update(task_summary(config))
    return summary


def task_summary(config: TrainConfig) -> dict:
    """What `train.json` records about the tasks and the models a run starts from."""
    sources = {"init_from": config.init_from, "cluster_encoder": config.cluster_encoder}
    recorded = {}
    for name, path in sources.items():
        if path:
            recorded[name] = source_record(path)
    seconds = clustering_seconds(config)
    labels_used = not is_unsupervised(config) or any(item["labels_used"] is not False for item in recorded.values())
    return {
        "labels_used": labels_used,
        "tasks": config.tasks,
        "task_options": dict(config.task_options),
        **({"views": view_preset(config)} if config.tasks in ("augmentation", "mixture") else {}),
        **recorded,
        **({"clustering_seconds": seconds} if seconds is not None else {}),
    }


def source_record(path) -> dict:
    """What a run records about a model it starts from: a `mssl-tf train` output, a zoo entry or a keras-hub preset
    directory (whose labels and training time are unknown here: `labels_used` None counts as used)."""
    from mssl_tf import zoo
    from mssl_tf.backbones.text import is_keras_hub_preset

    if is_keras_hub_preset(path):
        weights = Path(path) / "model.weights.h5"
        return {"path": str(Path(path).resolve()), "keras_hub_preset": True,
                "sha256": sha256(weights) if weights.is_file() else None, "labels_used": None,
                "train_seconds": None, "pretraining_seconds": None}
    if str(path) in zoo.available():
        card = zoo.read_card(str(path))
        return {"path": str(path), "zoo_entry": str(path), "sha256": card["weights"]["sha256"],
                "labels_used": card.get("dataset", {}).get("labels_used"),
                "train_seconds": card.get("training", {}).get("train_seconds"), "pretraining_seconds": None}
    source = source_summary(path)
    return {"path": str(model_file(path)), "sha256": sha256(model_file(path)), "labels_used": source.get("labels_used"),
            "train_seconds": source.get("train_seconds"), "pretraining_seconds": pretraining_seconds(source)}


def pretraining_seconds(summary: dict) -> float:
    """Seconds spent before a run on what it starts from: the training of its `--init-from` and `--cluster-encoder`
    models (theirs in turn included, a model used twice counted once) and the clustering. A run's whole cost is
    this plus its own `train_seconds`. Reads a source's `train.json` where `summary` predates these fields."""
    total = float(summary.get("clustering_seconds") or 0.0)
    counted = set()
    for name in ("init_from", "cluster_encoder"):
        source = summary.get(name)
        if not source or source.get("sha256") in counted:
            continue
        counted.add(source.get("sha256"))
        if source.get("train_seconds") is None:
            recorded = source_summary(source["path"]) if Path(source["path"]).exists() else {}
            source = {**source, "train_seconds": recorded.get("train_seconds"),
                      "pretraining_seconds": pretraining_seconds(recorded)}
        total += float(source.get("train_seconds") or 0.0) + float(source.get("pretraining_seconds") or 0.0)
    return round(total, 1)


def run_summary(config: TrainConfig, train_seconds: float, steps: int, curve: list, history: dict,
                **details) -> dict:
    """`train.json` of a trained run; `details` adds the driver's own fields (resumed_from, stopped, workers...)."""
    return {
        "config": asdict(config),
        "train_seconds": round(train_seconds, 1),
        "steps": steps,
        "episodes": steps * config.meta_batch,
        **details,
        **data_summary(config),
        "curve": curve,
        "history": history,
    }


def untrained_summary(config: TrainConfig, validation_point: dict) -> dict:
    """`train.json` of `--steps 0`: the seeded, never-trained model (the random-initialization floor)."""
    return {"config": asdict(config), "train_seconds": 0.0, "steps": 0, "episodes": 0, "labels_used": False,
            "untrained": True, "curve": [validation_point], "history": {}}


def write_train_summary(output, summary: dict) -> Path:
    return results.write_json(Path(output) / "train.json", summary)


# === Evaluation records ===
def evaluation_fields(summary: dict, command: str) -> dict:
    """What every evaluation record of a trained run holds besides its scores."""
    train_config = summary.get("config", {})
    return {
        "train_seconds": summary.get("train_seconds", 0.0),
        "pretraining_seconds": pretraining_seconds(summary),
        "labels_used": bool(summary.get("labels_used", True)),
        "command": {"train": train_config.get("command", ""), "eval": command},
        "commit": results.current_commit(PACKAGE_DIRECTORY),
        "hardware": hardware(),
    }


def method_name(summary: dict, model) -> str:
    return summary.get("config", {}).get("method", type(model).__name__.lower())


def write_learning_curve(results_dir, run: str, summary: dict) -> Path:
    """The run's `train.json` beside its test records as `<run>_training.json` (the learning curve)."""
    return results.write_json(Path(results_dir) / f"{run}_training.json", summary)
