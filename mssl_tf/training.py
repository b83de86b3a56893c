"""Episodic training driven by `model.fit`: data, strategy, optimizer schedule, time budget, learning curve."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from mssl_tf import distribute
from mssl_tf import ssl_training
from mssl_tf import unsupervised_training
from mssl_tf.backbones import build_backbone
from mssl_tf.data import EpisodeSpec, load_split
from mssl_tf.distributed_training import episodes_from_step
from mssl_tf.evaluation import confidence_interval, episode_accuracies
from mssl_tf.guards import DatasetExhaustionGuard, NonFiniteLossGuard, StepLimit
from mssl_tf.methods import build_method

VALIDATION_SEED = 7  # validation episodes differ from the test episodes' seed


@dataclass
class TrainConfig:
    method: str = "protonet"
    backbone: str = "conv4"
    data_dir: str | None = None
    source: str = "zips"
    split: str = "train"
    ways: int = 60
    shots: int = 5
    queries: int = 5
    meta_batch: int = 1
    batch_size: int = 256  # SSL methods: images per step (global batch)
    probe: bool = False  # SSL methods: online linear probe on stop-gradient features (uses labels)
    tasks: str = "labeled"  # or tasks made from the images alone (mssl_tf.unsupervised_training)
    cluster_encoder: str | None = None  # tasks=clusters: trained model whose embeddings are clustered
    init_from: str | None = None  # trained model whose backbone starts this run (e.g. a BYOL encoder)
    task_options: dict = field(default_factory=dict)  # unsupervised tasks: clusters, partitions, mixture, ...
    views: str = "omniglot"  # augmentation preset of augmentation tasks (mssl_tf.data.views.VIEW_PRESETS)
    steps: int = 1000
    steps_per_epoch: int = 100
    minutes: float | None = None
    learning_rate: float = 1e-3
    halve_every: int | None = 2000
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


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` once `minutes` of training have passed (checked after every step)."""

    def __init__(self, minutes, clock):
        super().__init__()
        self.seconds = minutes * 60.0
        self.clock = clock

    def on_train_batch_end(self, batch, logs=None):
        if self.clock.training_seconds() >= self.seconds:
            self.model.stop_training = True


class TrainingClock(keras.callbacks.Callback):
    """Training wall time, excluding the time spent in validation; counts optimizer steps."""

    def __init__(self):
        super().__init__()
        self.start = None
        self.excluded = 0.0
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.steps = int(self.model.optimizer.iterations.numpy())  # a resumed run continues the count

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def training_seconds(self):
        return time.perf_counter() - self.start - self.excluded


class ValidationCurve(keras.callbacks.Callback):
    """After every epoch: accuracy on fixed validation episodes, recorded against training time."""

    def __init__(self, class_images, spec, episodes, clock, meta_batch):
        super().__init__()
        self.class_images, self.spec, self.episodes = class_images, spec, episodes
        self.clock, self.meta_batch = clock, meta_batch
        self.points = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        accuracies = episode_accuracies(self.model, self.class_images, self.spec, self.episodes, seed=VALIDATION_SEED)
        mean, half_width = confidence_interval(accuracies)
        self.clock.excluded += time.perf_counter() - start
        point = {
            "train_seconds": round(self.clock.training_seconds(), 1),
            "steps": self.clock.steps,
            "episodes": self.clock.steps * self.meta_batch,
            "validation_accuracy": round(100 * mean, 2),
            "validation_ci95": round(100 * half_width, 2),
            "train_loss": float(logs.get("loss", math.nan)) if logs else math.nan,
        }
        self.points.append(point)
        if logs is not None:
            logs["validation_accuracy"] = mean  # for early stopping and the history
        print(f"  validation {self.spec.ways}-way {self.spec.shots}-shot: {point}", flush=True)


def build_model(config: TrainConfig):
    backbone = build_backbone(config.backbone)
    options = dict(config.method_options)
    if config.method in ("maml", "fomaml", "metasgd", "anil", "reptile"):
        options.setdefault("ways", config.ways)
    if ssl_training.is_ssl(config.method):
        options = {**ssl_training.ssl_options(config), **options}
    return build_method(config.method, backbone, **options)


def make_optimizer(config: TrainConfig):
    learning_rate = config.learning_rate
    if config.halve_every:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, config.halve_every, 0.5, staircase=True
        )
    return keras.optimizers.Adam(learning_rate)


def prepare(config: TrainConfig):
    """What both drivers (`fit` here, `mssl_tf.distributed_training`) start from: the seeded model, built and
    compiled in the strategy's scope (optionally initialized from another run), and the train and validation data.

    Returns:
        (strategy, model, train class images, validation class images).
    """
    keras.utils.set_random_seed(config.seed)
    strategy = distribute.get_strategy(config.strategy, config.devices)
    train_images = load_split(config.split, config.data_dir, config.source)
    validation_images = load_split("val", config.data_dir, config.source)
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=make_optimizer(config), jit_compile=config.jit_compile)
    if config.init_from:
        unsupervised_training.initialize_backbone(model, config.init_from)
    return strategy, model, train_images, validation_images


def data_summary(config: TrainConfig) -> dict:
    """What `train.json` records about the training data, `labels_used` first."""
    return {
        "labels_used": True,
        **(ssl_training.ssl_summary(config) if ssl_training.is_ssl(config.method) else {}),
        **(unsupervised_training.summary(config) if config.tasks != "labeled" or config.init_from else {}),
    }


def train(config: TrainConfig, callbacks=()) -> dict:
    """Trains one model, saves `<output>/model.keras` and `<output>/train.json`, returns the summary.

    A run killed part-way resumes from its last backup (`backup_dir`) when started again with the same config.
    `strategy="multiworker"` trains with `mssl_tf.distributed_training` instead of `fit`.
    """
    unsupervised_training.check(config)
    if config.strategy == "multiworker":
        from mssl_tf.distributed_training import train_distributed

        return train_distributed(config, callbacks)
    if config.steps == 0:
        return ssl_training.save_untrained(config)  # the random-initialization floor
    strategy, model, train_images, validation_images = prepare(config)
    spec = EpisodeSpec(config.ways, config.shots, config.queries)
    backup_dir = config.backup_dir or str(Path(config.output) / "backup")
    backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=config.backup_every, double_checkpoint=True)
    backup.set_model(model)
    backup.on_train_begin()  # restores now: the episodes must continue from the restored step
    start_step = int(model.optimizer.iterations.numpy())
    if start_step:
        print(f"resumed from step {start_step} ({backup_dir})", flush=True)
    if ssl_training.is_ssl(config.method):
        dataset = ssl_training.ssl_dataset(config, train_images, start_step)
    elif unsupervised_training.is_unsupervised(config):
        dataset = unsupervised_training.task_dataset(config, train_images, spec, start_step)
    else:
        dataset = episodes_from_step(train_images, spec, config.meta_batch, config.seed, start_step)

    clock = TrainingClock()
    validation_ways = min(config.validate_ways, getattr(model, "ways", config.validate_ways))
    curve = ValidationCurve(
        validation_images,
        EpisodeSpec(validation_ways, config.validate_shots, 15),
        config.validate_episodes,
        clock,
        config.meta_batch,
    )
    user_callbacks = list(callbacks)
    # The guards come first: a diverged step must stop training before the backup overwrites the last good one.
    callbacks = [NonFiniteLossGuard(backup_dir), DatasetExhaustionGuard(config.steps_per_epoch, config.steps),
                 StepLimit(config.steps), backup, clock, curve]
    if config.minutes:
        callbacks.append(TimeBudget(config.minutes, clock))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(config.tensorboard))
    if config.early_stop:
        callbacks.append(keras.callbacks.EarlyStopping(config.early_stop, patience=config.patience))
    # A resumed run restarts its epoch (Keras' BackupAndRestore restores the epoch, not the batch), hence one
    # more epoch at most; StepLimit ends the run at exactly config.steps optimizer steps.
    epochs = max(1, math.ceil(config.steps / config.steps_per_epoch)) + (1 if start_step else 0)
    history = model.fit(dataset, steps_per_epoch=config.steps_per_epoch, epochs=epochs,
                        callbacks=callbacks + user_callbacks, verbose=2)

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / "model.keras")
    summary = {
        "config": asdict(config),
        "train_seconds": round(clock.training_seconds(), 1),
        "steps": clock.steps,
        "episodes": clock.steps * config.meta_batch,
        "resumed_from": start_step,
        **data_summary(config),
        "curve": curve.points,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }
    (output / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_trained(path: str | Path):
    """A trained model (`model.keras` or its directory) and its training summary when present."""
    path = Path(path)
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.is_file():
        raise FileNotFoundError(f"No trained model at {model_file} (expected a .keras file or a directory holding "
                                "model.keras, as written by `mssl-tf train --output DIR`)")
    summary_file = model_file.parent / "train.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    import mssl_tf.methods  # noqa: F401  (registers the serializable classes)

    return keras.saving.load_model(model_file), summary
