"""`TrainConfig`: everything one training run is given, and the checks of combinations it cannot train."""

from __future__ import annotations

from dataclasses import dataclass, field

from mssl_tf.data.class_splits import (DatasetOptions, image_channels, is_text_dataset, is_unlabeled, load_class_split,
                                      spec_of)
from mssl_tf.data.text_views import DEFAULT_TEXT_PRESET
from mssl_tf.data.unsupervised_tasks import TASK_KINDS
from mssl_tf.methods import DEFAULT_METHOD, method_class

CLUSTER_DEFAULTS = {"clusters": 500, "partitions": 10, "iterations": 30}  # CACTUs used k = 500 on Omniglot
TASK_OPTIONS = (*CLUSTER_DEFAULTS, "mixture", "mixture_weights", "original_support")


@dataclass
class TrainConfig:
    method: str = DEFAULT_METHOD
    backbone: str = "conv4"
    backbone_options: dict = field(default_factory=dict)  # keyword arguments of the backbone's builder
    dataset: str = "omniglot"  # any mssl_tf.data.class_splits.DATASETS entry: cifar-fs, cifar10, stl10, tfds:NAME, ...
    data_dir: str | None = None
    source: str = "zips"
    image_size: int | None = None  # None: the dataset's own (Omniglot 28, CIFAR 32, STL-10 96, folders 84)
    channels: int | None = None  # None: the dataset's own (Omniglot 1, CIFAR and STL-10 3, folders 3)
    min_images: int = 20  # folders and TFDS: classes need this many images (folders: each contributes this many)
    split: str = "train"
    ways: int = 60
    shots: int = 5
    queries: int = 5
    meta_batch: int = 1
    tasks_per_pass: int | None = None  # episodic methods: tasks per gradient pass (memory bound); None: all at once
    batch_size: int = 256  # methods trained on views: images per step (global batch)
    probe: bool = False  # methods trained on views: online linear probe on stop-gradient features (uses labels)
    tasks: str = "labeled"  # or tasks made from the images alone (mssl_tf.data.unsupervised_tasks)
    cluster_encoder: str | None = None  # tasks=clusters: trained model whose embeddings are clustered
    init_from: str | None = None  # trained model whose backbone starts this run (e.g. a self-supervised encoder)
    task_options: dict = field(default_factory=dict)  # unsupervised tasks: clusters, partitions, mixture, ...
    views: str | None = None  # augmentation preset of views and augmentation tasks; None: `view_preset`
    steps: int = 1000
    steps_per_epoch: int = 100
    minutes: float | None = None
    snapshot_minutes: tuple[float, ...] = ()  # marks of training time: the model kept at each (fit driver)
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum 0.9), see `OPTIMIZERS`
    weight_decay: float = 0.0  # decoupled: each step w -= learning_rate · weight_decay · w (Keras' `weight_decay`)
    halve_every: int | None = 2000
    lr_schedule: str = "halve"  # "halve" (every `halve_every` steps; 0/None: constant) or "cosine" over the budget
    seed: int = 0
    strategy: str = "default"
    devices: int | None = None
    jit_compile: bool = False
    validate_ways: int = 5
    validate_shots: int = 1
    validate_episodes: int = 200
    method_options: dict = field(default_factory=dict)
    tensorboard: str | None = None
    output: str = "runs/model"
    backup_dir: str | None = None  # fault tolerance: default <output>/backup (see docs/multiworker.md)
    backup_every: int = 100  # steps between backups
    early_stop: str | None = None  # epoch metric to stop on, e.g. "validation_accuracy" or "loss"
    patience: int = 3
    preemption_checkpoint: bool = False  # multiworker: save and exit (code 42) on SIGTERM
    command: str = ""


def dataset_options(config: TrainConfig) -> DatasetOptions:
    """How the run's dataset is read (folders: decoded size and channels, class filter, partition seed 0)."""
    return DatasetOptions(image_size=config.image_size, channels=config.channels, min_images=config.min_images)


def view_preset(config: TrainConfig) -> str:
    """The run's augmentation preset: `views` when given, else `omniglot` for 1-channel data (drawings) and `rgb`
    for 3-channel data (`mssl_tf.data.views.VIEW_PRESETS`), `identity` for sentences (`mssl_tf.data.text_views`)."""
    if config.views is not None:
        return config.views
    if is_text_dataset(config.dataset):
        return DEFAULT_TEXT_PRESET
    channels = image_channels(config.dataset, config.data_dir, dataset_options(config))
    return "omniglot" if channels == 1 else "rgb"


def load_classes(config: TrainConfig, split: str):
    """A split of the run's dataset as class arrays."""
    return load_class_split(config.dataset, split, config.data_dir, config.source, dataset_options(config))


def batches(config: TrainConfig) -> str:
    """What the method trains on: `"episodes"` or `"views"` (its class's `BATCHES`)."""
    return method_class(config.method).BATCHES


def is_unsupervised(config: TrainConfig) -> bool:
    """Episodes made from the images alone (`--tasks` other than `labeled`)."""
    return config.tasks != "labeled"


OPTIMIZERS = ("adam", "sgd")  # sgd: SGD with momentum 0.9, as in the self-supervised papers' reference code


def check(config: TrainConfig) -> None:
    """Raises ValueError for a combination no driver can train, saying what to change."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if config.weight_decay < 0:
        raise ValueError(f"--weight-decay must be at least 0, got {config.weight_decay}")
    if config.tasks not in TASK_KINDS:
        raise ValueError(f"unknown tasks {config.tasks!r}; known: {', '.join(TASK_KINDS)}")
    if config.tasks_per_pass is not None and (config.tasks_per_pass < 1 or config.meta_batch % config.tasks_per_pass):
        raise ValueError(f"--tasks-per-pass {config.tasks_per_pass} must be a positive divisor of --meta-batch "
                         f"{config.meta_batch}")
    if is_unsupervised(config) and config.strategy == "multiworker":
        raise ValueError("--tasks other than 'labeled' train with --strategy default or mirrored; the multi-worker "
                         "driver draws labeled episodes only")
    if is_unsupervised(config) and batches(config) != "episodes":
        raise ValueError(f"--tasks {config.tasks} makes episodes for episodic methods; {config.method} trains on "
                         "multi-view batches of the unlabeled images already (drop --tasks)")
    if (config.tasks in ("augmentation", "mixture") and is_text_dataset(config.dataset)
            and view_preset(config) == DEFAULT_TEXT_PRESET):
        raise ValueError(f"--tasks {config.tasks} on sentences makes a class of views of one sentence; the default "
                         f"text views ({DEFAULT_TEXT_PRESET}) are the sentence itself: pass --views text (word "
                         "deletion and span crops)")
    if config.tasks == "clusters" and not config.cluster_encoder:
        raise ValueError("--tasks clusters needs --cluster-encoder PATH (a trained model whose embeddings are "
                         "clustered)")
    if is_unlabeled(config.dataset, config.split):
        if batches(config) == "episodes" and not is_unsupervised(config):
            raise ValueError(f"--split {config.split} of {config.dataset} has no labels; {config.method} needs labeled "
                             "episodes: train a method on views, or pass --tasks augmentation (or another kind)")
        if config.probe:
            raise ValueError(f"--probe needs labels; --split {config.split} of {config.dataset} has none")
    if any(minutes <= 0 for minutes in config.snapshot_minutes):
        raise ValueError(f"--snapshot-minutes must be positive, got {list(config.snapshot_minutes)}")
    if config.snapshot_minutes and config.strategy == "multiworker":
        raise ValueError("--snapshot-minutes works with --strategy default or mirrored (the workers' clocks differ, "
                         "and a model save needs every worker at the same step); drop it for multiworker runs")
    spec_of(config.dataset)  # an unknown dataset fails here, naming the registry
    unknown = set(config.task_options) - set(TASK_OPTIONS)
    if unknown:
        raise ValueError(f"unknown --task-option {sorted(unknown)}; known: {', '.join(TASK_OPTIONS)}")
