"""Self-supervised training and encoder evaluation glue for `mssl_tf.training` and `mssl-tf` (kept out of both).

SSL methods train on multi-view batches of the split's images with their labels dropped (the Vinyals train
split flattened: 4112 classes × 20 drawings = 82,240 images). Labels reach the model only when the online probe
is asked for (`TrainConfig.probe`), and then only the probe's stop-gradient classifier sees them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import keras

from mssl_tf.data.views import config_dict, flatten_classes, multi_view_dataset, view_config
from mssl_tf.methods.ssl import SSL_METHODS


def is_ssl(method: str) -> bool:
    return method in SSL_METHODS


def ssl_options(config) -> dict:
    """Method options `mssl-tf train` derives from the training config (explicit `--option`s win)."""
    from mssl_tf.data import read_split

    options = {}
    if config.method == "byol":
        options["total_steps"] = config.steps  # the EMA schedule reaches τ = 1 at the last planned step
    if config.probe:
        options["probe_classes"] = len(read_split(config.split, config.data_dir))
    return options


def ssl_dataset(config, class_images, start_step: int = 0):
    """Multi-view batches of the flattened split, from batch `start_step` on; labels only for the probe."""
    images, labels = flatten_classes(class_images)
    return multi_view_dataset(images, config.batch_size, config.views, seed=config.seed,
                              labels=labels if config.probe else None, first_batch=start_step)


def ssl_summary(config) -> dict:
    """What `train.json` records about an SSL run's data."""
    return {
        "labels_used": bool(config.probe),
        "labels_used_by_encoder": False,
        "batch_size": config.batch_size,
        "views": config_dict(view_config(config.views)),
    }


def save_untrained(config) -> dict:
    """`--steps 0`: saves the randomly initialized model (seeded) as `model.keras` with a `train.json`.

    This is the floor of the results table: a random Conv-4 scored by the same evaluation as trained encoders.
    """
    from mssl_tf.data import EpisodeSpec, load_split
    from mssl_tf.evaluation import confidence_interval, episode_accuracies
    from mssl_tf.training import VALIDATION_SEED, build_model

    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    start = time.perf_counter()
    validation = load_split("val", config.data_dir, config.source)
    spec = EpisodeSpec(config.validate_ways, config.validate_shots, 15)
    mean, half_width = confidence_interval(
        episode_accuracies(model, validation, spec, config.validate_episodes, seed=VALIDATION_SEED)
    )
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / "model.keras")
    summary = {
        "config": asdict(config),
        "train_seconds": 0.0,
        "steps": 0,
        "episodes": 0,
        "labels_used": False,
        "untrained": True,
        "curve": [{"train_seconds": 0.0, "steps": 0, "episodes": 0, "validation_accuracy": round(100 * mean, 2),
                   "validation_ci95": round(100 * half_width, 2),
                   "validation_seconds": round(time.perf_counter() - start, 1)}],
        "history": {},
    }
    (output / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"  validation {spec.ways}-way {spec.shots}-shot of the untrained model: {summary['curve'][0]}", flush=True)
    return summary



def evaluate_frozen_and_record(model_path, protocol: str, data_dir=None, split="test", source="zips",
                               results_dir=None, run_name=None, command="") -> dict:
    """`mssl-tf eval --protocol knn|linear`: scores a trained model's frozen embeddings on a Vinyals split.

    Writes `<results_dir>/<run>_<protocol>.json` when asked (a record outside the few-shot results table).
    """
    import os
    import platform

    from mssl_tf.data import load_split, resolve_data_dir
    from mssl_tf.evaluation import knn_accuracy, linear_probe_accuracy
    from mssl_tf.results import current_commit
    from mssl_tf.training import load_trained
    from mssl_tf.unsupervised_training import pretraining_seconds

    data_dir = resolve_data_dir(data_dir, require_zips=source == "zips")
    model, summary = load_trained(model_path)
    class_images = load_split(split, data_dir, source)
    evaluate = {"knn": knn_accuracy, "linear": linear_probe_accuracy}[protocol]
    result = evaluate(model, class_images)
    train_config = summary.get("config", {})
    record = {
        "run": run_name or Path(model_path).name,
        "method": train_config.get("method", type(model).__name__.lower()),
        "backbone": train_config.get("backbone", "conv4"),
        "dataset": "omniglot",
        "split": f"{split} (Vinyals)",
        **result,
        "train_seconds": summary.get("train_seconds", 0.0),
        "pretraining_seconds": pretraining_seconds(summary),
        "labels_used": bool(summary.get("labels_used", True)),
        "command": {"train": train_config.get("command", ""), "eval": command},
        "commit": current_commit(Path(__file__).parent),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    }
    print(f"{protocol}: {result['accuracy']:.2f} ± {result['ci95']:.2f} % ({result['classes']}-way, "
          f"{result['scored']} images, {result['evaluation_seconds']} s)", flush=True)
    if results_dir:
        path = Path(results_dir) / f"{record['run']}_{protocol}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
