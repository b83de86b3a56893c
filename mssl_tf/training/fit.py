"""The `model.fit` driver: one run (or its resumption from the backup), and the untrained floor (`--steps 0`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

from mssl_tf.data import EpisodeSpec
from mssl_tf.evaluation import confidence_interval, episode_accuracies
from mssl_tf.training.backup import AtomicBackupAndRestore
from mssl_tf.training.callbacks import (VALIDATION_SEED, TimeBudget, TrainingClock, learning_rate_schedule,
                                        validation_curve, validation_spec)
from mssl_tf.training.config import TrainConfig, load_classes
from mssl_tf.training.datasets import training_dataset
from mssl_tf.training.guards import DatasetExhaustionGuard, NonFiniteLossGuard, StepLimit
from mssl_tf.training.model import build_model, prepare
from mssl_tf.training.records import run_summary, untrained_summary, write_train_summary
from mssl_tf.training.snapshots import TrainingTimeSnapshots, snapshot_records


def train_with_fit(config: TrainConfig, callbacks=()) -> dict:
    """Trains with `model.fit`, saves `<output>/model.keras` and `<output>/train.json`, returns the summary.

    A run killed part-way resumes from its last backup (`backup_dir`) when started again with the same config;
    its training clock (time budget, snapshots, `train_seconds`) continues from the backup's.
    """
    strategy, model, train_images, validation_images = prepare(config)
    clock = TrainingClock()
    backup_dir = config.backup_dir or str(Path(config.output) / "backup")
    backup = AtomicBackupAndRestore(backup_dir, save_freq=config.backup_every,
                                    run_state=lambda: {"train_seconds": clock.training_seconds()})
    backup.set_model(model)
    backup.on_train_begin()  # restores now: the batches must continue from the restored step
    start_step = int(model.optimizer.iterations.numpy())
    clock.earlier = float(backup.restored_state.get("train_seconds", 0.0))
    if start_step:
        print(f"resumed from step {start_step} after {clock.earlier:.1f} s of training ({backup_dir})", flush=True)
    dataset = training_dataset(config, train_images, start_step)

    curve = validation_curve(config, model, validation_images, clock)
    # The guards come first: a diverged step must stop training before the backup overwrites the last good one.
    driver_callbacks = [NonFiniteLossGuard(backup_dir), DatasetExhaustionGuard(config.steps_per_epoch, config.steps),
                        StepLimit(config.steps), backup, clock, curve]
    if config.snapshot_minutes:
        driver_callbacks.append(TrainingTimeSnapshots(config, clock, curve))
    if config.minutes:
        driver_callbacks.append(TimeBudget(config.minutes, clock))
    driver_callbacks.extend(learning_rate_schedule(config, clock))
    if config.tensorboard:
        driver_callbacks.append(keras.callbacks.TensorBoard(config.tensorboard))
    if config.early_stop:
        driver_callbacks.append(keras.callbacks.EarlyStopping(config.early_stop, patience=config.patience))
    # A resumed run restarts its epoch (BackupAndRestore restores the epoch, not the batch), hence one
    # more epoch at most; StepLimit ends the run at exactly config.steps optimizer steps.
    epochs = max(1, math.ceil(config.steps / config.steps_per_epoch)) + (1 if start_step else 0)
    history = model.fit(dataset, steps_per_epoch=config.steps_per_epoch, epochs=epochs,
                        callbacks=driver_callbacks + list(callbacks), verbose=2)

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / "model.keras")
    summary = run_summary(
        config, clock.training_seconds(), clock.steps, curve.points,
        {key: [float(value) for value in values] for key, values in history.history.items()},
        resumed_from=start_step,
        **({"snapshots": snapshot_records(output, config.snapshot_minutes)} if config.snapshot_minutes else {}),
    )
    write_train_summary(output, summary)
    return summary


def save_untrained(config: TrainConfig) -> dict:
    """`--steps 0`: saves the randomly initialized model (seeded) as `model.keras` with a `train.json`.

    This is the floor of the results table: a random backbone scored by the same evaluation as trained encoders.
    """
    keras.utils.set_random_seed(config.seed)
    validation = load_classes(config, "val")
    model = build_model(config, validation)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    start = time.perf_counter()
    spec = validation_spec(config, model, validation)
    mean, half_width = confidence_interval(
        episode_accuracies(model, validation, spec, config.validate_episodes, seed=VALIDATION_SEED)
    )
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / "model.keras")
    point = {"train_seconds": 0.0, "steps": 0, "episodes": 0, "validation_accuracy": round(100 * mean, 2),
             "validation_ci95": round(100 * half_width, 2), "validation_seconds": round(time.perf_counter() - start, 1)}
    summary = untrained_summary(config, point)
    write_train_summary(output, summary)
    print(f"  validation {spec.ways}-way {spec.shots}-shot of the untrained model: {point}", flush=True)
    return summary
