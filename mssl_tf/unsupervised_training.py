"""Glue between `mssl_tf.training` / `mssl-tf` and unsupervised meta-learning (kept out of both).

`mssl-tf eval --adaptation-steps 0,1,5` measures how a meta-learned model adapts (`adaptation_command`).

`--tasks augmentation|transformation|clusters|mixture` makes the training tasks from the split's images alone
(`mssl_tf.data.unsupervised_tasks`); `--init-from PATH` starts the backbone from a trained model (e.g. a BYOL
encoder, for BYOL + meta-learning); `--cluster-encoder PATH` names the encoder whose embeddings are clustered for
`clusters` tasks. `train.json` records `labels_used: false` only when neither the tasks nor any model the run starts
from (init or cluster encoder) used labels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from mssl_tf.data import unsupervised_tasks
from mssl_tf.data.views import VIEW_PRESETS

CLUSTER_DEFAULTS = {"clusters": 500, "partitions": 10, "iterations": 30}  # CACTUs used k = 500 on Omniglot


def add_train_arguments(parser) -> None:
    """The `mssl-tf train` flags of this module."""
    parser.add_argument("--tasks", choices=unsupervised_tasks.TASK_KINDS, default="labeled",
                        help="episodes of labeled classes, or tasks made from the images alone (labels unused): "
                        "augmented views of one image as a class, transformations as classes, clusters of a "
                        "trained encoder's embeddings as classes, or a mixture (mssl_tf/data/unsupervised_tasks.py); "
                        "augmentation tasks use the --views preset")
    parser.add_argument("--cluster-encoder", default=None,
                        help="trained model (model.keras or its directory) whose embeddings are clustered for "
                        "--tasks clusters (and mixture)")
    parser.add_argument("--init-from", default=None,
                        help="initialize the backbone from this trained model (model.keras or its directory), e.g. a "
                        "BYOL encoder")
    parser.add_argument("--view-preset", dest="views", choices=sorted(VIEW_PRESETS), default=argparse.SUPPRESS,
                        help="the same as --views: augmentation preset of the views that --tasks augmentation "
                        "makes classes of")
    parser.add_argument("--task-option", type=_key_value, action="append", default=None,
                        help="unsupervised task option key=value: clusters, partitions, iterations (k-means), mixture "
                        "(comma-separated kinds), mixture_weights (JSON list), original_support (UMTRA shots)")


def _key_value(text: str):
    key, separator, value = text.partition("=")
    if not separator:
        raise ValueError(f"--task-option {text!r} is not key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def config_fields(args) -> dict:
    """`TrainConfig` fields from the parsed flags."""
    return {"tasks": args.tasks, "cluster_encoder": args.cluster_encoder, "init_from": args.init_from,
            "task_options": dict(args.task_option or [])}


def is_unsupervised(config) -> bool:
    return getattr(config, "tasks", "labeled") != "labeled"


def check(config) -> None:
    """Errors for combinations the unsupervised path cannot train."""
    if is_unsupervised(config) and config.strategy == "multiworker":
        raise ValueError("--tasks other than 'labeled' train with --strategy default or mirrored; the multi-worker "
                         "driver draws labeled episodes only")
    from mssl_tf.methods.ssl import SSL_METHODS

    if is_unsupervised(config) and config.method in SSL_METHODS:
        raise ValueError(f"--tasks {config.tasks} makes episodes for episodic methods; {config.method} trains on "
                         "multi-view batches of the unlabeled images already (drop --tasks)")
    if config.tasks == "clusters" and not config.cluster_encoder:
        raise ValueError("--tasks clusters needs --cluster-encoder PATH (a trained model whose embeddings are "
                         "clustered)")
    unknown = set(config.task_options) - {*CLUSTER_DEFAULTS, "mixture", "mixture_weights", "original_support"}
    if unknown:
        raise ValueError(f"unknown --task-option {sorted(unknown)}; known: clusters, partitions, iterations, mixture, "
                         "mixture_weights, original_support")


def task_dataset(config, class_images, spec, start_step: int = 0):
    """Meta-batches of unsupervised tasks from `class_images` with the labels (the class axis) dropped."""
    check(config)
    images = unsupervised_tasks.unlabeled_images(class_images)
    options = config.task_options
    assignments = None
    if config.cluster_encoder and config.tasks in ("clusters", "mixture"):
        assignments = cluster_assignments(config, images)
    mixture = options.get("mixture")
    maker = unsupervised_tasks.task_maker(
        config.tasks, images, spec, view_preset=config.views, assignments=assignments,
        mixture=mixture.split(",") if isinstance(mixture, str) else mixture,
        mixture_weights=options.get("mixture_weights"), original_support=bool(options.get("original_support", False)),
    )
    return unsupervised_tasks.task_dataset(maker, config.meta_batch, config.seed,
                                           first_episode=start_step * config.meta_batch)


def cluster_assignments(config, images) -> np.ndarray:
    """k-means partitions `[partitions, N]` of the cluster encoder's embeddings, cached in the output directory."""
    settings = {key: int(config.task_options.get(key, value)) for key, value in CLUSTER_DEFAULTS.items()}
    encoder_file = model_file(config.cluster_encoder)
    key = {**settings, "encoder": str(encoder_file.resolve()), "encoder_sha256": sha256(encoder_file),
           "seed": config.seed, "images": len(images)}
    cache = Path(config.output) / "cluster_partitions.npz"
    if cache.is_file():
        stored = np.load(cache)
        if json.loads(str(stored["key"])) == key:
            return stored["assignments"]
    from mssl_tf.training import load_trained

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


def clustering_seconds(config) -> float | None:
    """Seconds the run's k-means partitions took (embedding the images included), from the cache; None if none."""
    cache = Path(config.output or ".") / "cluster_partitions.npz"
    if not (config.cluster_encoder and config.tasks in ("clusters", "mixture") and cache.is_file()):
        return None
    stored = np.load(cache)
    return float(stored["seconds"]) if "seconds" in stored else None


def model_file(path) -> Path:
    path = Path(path)
    return path / "model.keras" if path.is_dir() else path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_summary(path) -> dict:
    """The `train.json` beside the trained model at `path` ({} when there is none)."""
    summary_file = model_file(path).parent / "train.json"
    return json.loads(summary_file.read_text()) if summary_file.is_file() else {}


def initialize_backbone(model, path) -> None:
    """Copies the backbone weights of the trained model at `path` into `model.backbone` (same architecture)."""
    from mssl_tf.training import load_trained

    source, _ = load_trained(path)
    if not hasattr(source, "backbone"):
        raise ValueError(f"{path} holds a {type(source).__name__} without a backbone; --init-from needs a model "
                         "trained by `mssl-tf train` (any method)")
    target_shapes = [tuple(weight.shape) for weight in model.backbone.weights]
    source_shapes = [tuple(weight.shape) for weight in source.backbone.weights]
    if target_shapes != source_shapes:
        raise ValueError(f"--init-from {path}: its backbone ({source.backbone.name}, {len(source_shapes)} weights) "
                         f"does not match --backbone ({model.backbone.name}, {len(target_shapes)} weights); train "
                         "with the same --backbone")
    model.backbone.set_weights(source.backbone.get_weights())


def summary(config) -> dict:
    """What `train.json` records about the tasks and the models a run starts from."""
    sources = {"init_from": config.init_from, "cluster_encoder": config.cluster_encoder}
    recorded = {}
    for name, path in sources.items():
        if path:
            source = source_summary(path)
            recorded[name] = {"path": str(model_file(path)), "sha256": sha256(model_file(path)),
                              "labels_used": source.get("labels_used"),
                              "train_seconds": source.get("train_seconds"),
                              "pretraining_seconds": pretraining_seconds(source)}
    seconds = clustering_seconds(config)
    # A source model without a record counts as having used labels: never claim less than is known.
    labels_used = not is_unsupervised(config) or any(item["labels_used"] is not False for item in recorded.values())
    return {
        "labels_used": labels_used,
        "tasks": config.tasks,
        "task_options": dict(config.task_options),
        **({"views": config.views} if config.tasks in ("augmentation", "mixture") else {}),
        **recorded,
        **({"clustering_seconds": seconds} if seconds is not None else {}),
    }


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



def add_eval_arguments(parser) -> None:
    """The `mssl-tf eval` flags of this module."""
    parser.add_argument("--adaptation-steps", type=_step_list, default=None,
                        help="comma-separated numbers of inner steps (or memory write passes) to score, e.g. 0,1,5: "
                        "accuracy after each on the same episodes (mssl_tf.evaluation.adaptation_curve)")


def _step_list(text: str) -> list[int]:
    try:
        steps = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--adaptation-steps {text!r} is not a comma-separated list of integers")
    if min(steps) < 0:
        raise argparse.ArgumentTypeError("--adaptation-steps must be non-negative")
    return steps


def adaptation_command(args) -> int:
    """`mssl-tf eval --adaptation-steps`: the adaptation curve per setting; one `<run>_<w>w<s>s_adaptation.json`
    record per setting in `--results-dir` (not a results-table row: it holds a curve, not one accuracy)."""
    import os
    import platform

    from mssl_tf.data import EpisodeSpec, load_split
    from mssl_tf.evaluation import adaptation_curve
    from mssl_tf.results import current_commit
    from mssl_tf.training import load_trained

    model, summary = load_trained(args.model)
    images = load_split(args.split, args.data_dir, args.source)
    run = args.run_name or model_file(args.model).parent.name
    for ways, shots in args.settings:
        if getattr(model, "ways", ways) != ways:
            print(f"skipping {ways}-way {shots}-shot: the model's classifier is {model.ways}-way")
            continue
        curve = adaptation_curve(model, images, EpisodeSpec(ways, shots, args.queries), args.adaptation_steps,
                                 args.episodes)
        for point in curve:
            print(f"{ways}-way {shots}-shot after {point['steps']} steps: {point['accuracy']:.2f} ± "
                  f"{point['ci95']:.2f} % ({point['episodes']} episodes)", flush=True)
        if args.results_dir:
            record = {
                "run": run, "method": summary.get("config", {}).get("method", type(model).__name__.lower()),
                "ways": ways, "shots": shots, "queries": args.queries, "split": f"{args.split} (Vinyals)",
                "adaptation": curve, "labels_used": bool(summary.get("labels_used", True)),
                "train_seconds": summary.get("train_seconds", 0.0),
                "pretraining_seconds": pretraining_seconds(summary),
                "command": {"train": summary.get("config", {}).get("command", ""), "eval": args.command_line},
                "commit": current_commit(Path(__file__).parent),
                "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            }
            path = Path(args.results_dir) / f"{run}_{ways}w{shots}s_adaptation.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0
