"""Callbacks of a training run, shared by both drivers: time budget, training clock, validation curve."""

from __future__ import annotations

import math
import time

import keras

from mssl_tf.data.episodes import EpisodeSpec
from mssl_tf.evaluation import confidence_interval, episode_accuracies

VALIDATION_SEED = 7  # validation episodes differ from the test episodes' seed


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` once `minutes` of training have passed (checked after every step)."""

    def __init__(self, minutes, clock):
        super().__init__()
        self.seconds = minutes * 60.0
        self.clock = clock

    def on_train_batch_end(self, batch, logs=None):
        if self.clock.training_seconds() >= self.seconds:
            self.model.stop_training = True


class CosineOverBudget(keras.callbacks.Callback):
    """`--lr-schedule cosine`: the learning rate falls from its base to 0 along a half cosine over the run's budget,
    whichever of `steps` and `minutes` ends it first (progress = the larger of the two fractions spent), so a run
    stopped by its time budget still ends with the small steps of a finished schedule. Set before every step."""

    def __init__(self, base_learning_rate, steps, minutes, clock):
        super().__init__()
        self.base, self.steps, self.minutes, self.clock = base_learning_rate, steps, minutes, clock

    def progress(self):
        spent = self.clock.steps / self.steps
        if self.minutes:
            spent = max(spent, self.clock.training_seconds() / (60.0 * self.minutes))
        return min(1.0, spent)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.base * 0.5 * (1.0 + math.cos(math.pi * self.progress())))


def learning_rate_schedule(config, clock) -> list:
    """The callbacks that set the learning rate during the run (none when the optimizer's own schedule does)."""
    if config.lr_schedule == "cosine":
        return [CosineOverBudget(config.learning_rate, config.steps, config.minutes, clock)]
    if config.lr_schedule != "halve":
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}: 'halve' or 'cosine'")
    return []


class TrainingClock(keras.callbacks.Callback):
    """Training wall time, excluding the time spent in validation (and in snapshots); counts optimizer steps.

    `earlier` holds the training seconds of the run before a resume (restored from its backup), so the time
    budget, the snapshots and `train.json` count the whole run, not the last start only.
    """

    def __init__(self):
        super().__init__()
        self.start = None
        self.earlier = 0.0
        self.excluded = 0.0
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.steps = int(self.model.optimizer.iterations.numpy())  # a resumed run continues the count

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def training_seconds(self):
        return self.earlier + time.perf_counter() - self.start - self.excluded


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


def validation_spec(config, model, validation_images) -> EpisodeSpec:
    """The validation episodes: `validate_ways` at most (and no more than the model's classifier or the split's
    classes hold), 15 queries a class or as many as the split's images leave."""
    classes, per_class = validation_images.shape[:2]
    ways = min(config.validate_ways, getattr(model, "ways", config.validate_ways), classes)
    queries = min(15, per_class - config.validate_shots)
    if ways < 2 or queries < 1:
        raise ValueError(f"the validation split has {classes} classes of {per_class} images: too few for "
                         f"{config.validate_shots}-shot validation episodes of 2 or more ways; use a dataset with "
                         "more classes (or images per class)")
    return EpisodeSpec(ways, config.validate_shots, queries)


def validation_curve(config, model, validation_images, clock: TrainingClock) -> ValidationCurve:
    """Fixed validation episodes after every epoch (`validation_spec`)."""
    return ValidationCurve(validation_images, validation_spec(config, model, validation_images),
                           config.validate_episodes, clock, config.meta_batch)
