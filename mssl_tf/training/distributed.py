"""The distributed training driver: any `keras.Model` with a `train_step`, under any `tf.distribute` strategy.

Keras 3's `fit` fails under `MultiWorkerMirroredStrategy` (`ValueError: Attempt to convert a value
(PerReplica:{...`), so multi-worker training runs here: a `tf.function` calls `strategy.run(model.train_step)`
(the very step `fit` calls, so each method's loss has one implementation) on per-replica batches from
`strategy.distribute_datasets_from_function`, and reduces the returned metrics across replicas and workers.
The driver also runs under `default` and `mirrored` strategies, which is how its results are compared with `fit`.

Around the step it provides what users expect from `fit`: progress lines, Keras callbacks (`on_epoch_end`
with the epoch's metrics, `stop_training`), TensorBoard scalars, early stopping on a metric, a time budget,
and fault tolerance: checkpoints every `checkpoint_every` steps and at every epoch end (the chief writes them;
the other workers write to temporary directories they delete), restored by every worker at start. The data
position is part of the state: datasets are built by `dataset_fn(input_context, start_step)` from the global
step on, so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mssl_tf import distribute
from mssl_tf.training.callbacks import TimeBudget, TrainingClock, learning_rate_schedule, validation_curve
from mssl_tf.training.config import TrainConfig
from mssl_tf.training.datasets import DatasetFunction, distributed_dataset_fn
from mssl_tf.training.guards import DatasetExhaustedError, check_finite_loss, dataset_exhausted_message
from mssl_tf.training.model import prepare
from mssl_tf.training.records import run_summary, write_train_summary


# === Early stopping ===
@dataclass
class EarlyStopping:
    """Stops training when `monitor` (an epoch metric, e.g. `loss` or `validation_accuracy`) has not improved
    by more than `min_delta` for `patience` epochs. `mode` is `min`, `max`, or `auto` (max for names holding
    `accuracy`, else min). Its state is checkpointed, so a resumed run stops where an uninterrupted one would."""

    monitor: str = "loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"

    def __post_init__(self):
        if self.mode == "auto":
            self.mode = "max" if "accuracy" in self.monitor else "min"
        if self.mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be min, max or auto, got {self.mode!r}")

    def improved(self, value: float, best: float) -> bool:
        if math.isnan(best):
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


# === The driver ===
class DistributedTrainer:
    """Trains `model` with its own `train_step` under `strategy`, with checkpoints and guards.

    The model must be built and compiled inside `strategy.scope()` (Keras' TF optimizer binds to the strategy
    current when it is created, and its variables must exist before the first step). `train_step(batch)`
    must return a dict of scalar metrics and scale its loss by the number of replicas (as Keras' own steps
    and `EpisodicModel` do: the optimizer sums gradients across replicas).

    Args:
        model: a compiled `keras.Model`.
        strategy: the strategy the model was built in (see `mssl_tf.distribute.get_strategy`).
        dataset_fn: `(input_context, start_step)` → per-replica batches for global steps `start_step, ...`
            (see `episode_dataset_fn`, `global_batch_dataset_fn`).
        steps: total optimizer steps of the run, counted across restarts.
        steps_per_epoch: steps between epoch ends (metrics reset, callbacks, checkpoint, early stopping).
        checkpoint_dir: where checkpoints live (shared by all workers); `None` disables them and resuming.
        checkpoint_every: also checkpoint every this many steps (besides every epoch end).
        keep_checkpoints: how many checkpoints the chief keeps.
        tensorboard: directory for TensorBoard scalars (chief only); `None` for none.
        early_stopping: an `EarlyStopping`, or `None`.
        minutes: stop after this much training time (the workers agree on the step).
        callbacks: Keras callbacks; the driver calls their train/epoch/batch hooks and honours
            `model.stop_training` (across workers, one step later).
        clock: the run's `TrainingClock` (also in `callbacks`): its training seconds are checkpointed and
            restored, so a resumed run's time budget and `train_seconds` continue from the checkpoint's.
        preemption_checkpoint: in a multi-worker run, also use
            `tf.distribute.experimental.PreemptionCheckpointHandler`: a SIGTERM to any worker makes every worker
            save a checkpoint at the same step and exit (code 42); run the same command again to resume. It
            probes the GCE metadata server when created (set `GCE_METADATA_IP` off Google Cloud).
        verbose: print a progress line per epoch on the chief.
    """

    def __init__(
        self,
        model: keras.Model,
        strategy: tf.distribute.Strategy,
        dataset_fn: DatasetFunction,
        steps: int,
        steps_per_epoch: int = 100,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 2,
        tensorboard: str | Path | None = None,
        early_stopping: EarlyStopping | None = None,
        minutes: float | None = None,
        callbacks=(),
        clock: TrainingClock | None = None,
        preemption_checkpoint: bool = False,
        verbose: bool = True,
    ):
        if getattr(model, "optimizer", None) is None:
            raise ValueError("Compile the model (inside strategy.scope()) before handing it to DistributedTrainer")
        if model.optimizer._distribution_strategy is not strategy:  # noqa: SLF001 (Keras keeps no public handle)
            raise ValueError(
                "The model's optimizer was created outside this strategy's scope; build and compile the model "
                "inside `with strategy.scope():`"
            )
        self.model, self.strategy, self.dataset_fn = model, strategy, dataset_fn
        self.steps, self.steps_per_epoch = int(steps), int(steps_per_epoch)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.tensorboard = tensorboard
        self.early_stopping = early_stopping
        self.minutes = minutes
        self.callbacks = _Callbacks(callbacks, model, steps_per_epoch)
        self.preemption_checkpoint = preemption_checkpoint and distribute.is_multi_worker(strategy)
        self.is_chief = distribute.is_chief(strategy)
        self.verbose = verbose and self.is_chief
        self.multi_worker = distribute.is_multi_worker(strategy)
        if not model.optimizer.built:
            with strategy.scope():
                model.optimizer.build(model.trainable_variables)
        # Driver state, checkpointed with the model: plain (per-process) variables assigned between steps.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="driver_step")
        self.best = tf.Variable(math.nan, dtype=tf.float64, trainable=False, name="early_stopping_best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="early_stopping_wait")
        self.history_json = tf.Variable("{}", dtype=tf.string, trainable=False, name="history")
        self.clock = clock
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
        metric_variables = [variable for metric in model.metrics for variable in metric.variables]
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, model_weights=list(model.weights),
            metric_variables=metric_variables, step=self.step,
            early_stopping_best=self.best, early_stopping_wait=self.wait, history=self.history_json,
            train_seconds=self.train_seconds,
        )
        self._step_function = None
        self.resumed_from = 0

    # --- checkpoints ---
    def _write_manager(self):
        directory = distribute.write_directory(self.checkpoint_dir, self.strategy)
        keep = self.keep_checkpoints if self.is_chief else 1
        return tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=keep)

    def restore(self) -> int:
        """Restores the latest checkpoint of `checkpoint_dir` (if any); returns the step it was taken at."""
        if self.checkpoint_dir is None:
            return 0
        distribute.remove_worker_directory(self.checkpoint_dir, self.strategy)
        latest = tf.train.latest_checkpoint(str(self.checkpoint_dir))
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        if self.clock is not None:
            self.clock.earlier = float(self.train_seconds.numpy())
        return int(self.step.numpy())

    def save(self) -> None:
        """Writes a checkpoint numbered by the step; every worker must call it at the same step."""
        if self.checkpoint_dir is None:
            return
        if self.clock is not None:
            self.train_seconds.assign(self.clock.training_seconds())
        self.manager.save(checkpoint_number=int(self.step.numpy()))
        distribute.remove_worker_directory(self.checkpoint_dir, self.strategy)

    # --- the step ---
    def _make_step_function(self):
        strategy, model = self.strategy, self.model
        names = []

        # Keras 3 creates non-trainable state (batch-norm moving statistics) with aggregation "none": each
        # replica keeps its own copy, and the workers drift apart. Averaging them after every step gives every
        # replica the same state, as aggregation "mean" did in Keras 2 (an exponential moving average of
        # the replicas' batch statistics).
        replica_state = [
            variable for variable in model.non_trainable_variables
            if variable.dtype.startswith("float") and getattr(variable, "aggregation", "none") == "none"
        ] if strategy.num_replicas_in_sync > 1 else []

        def replica_step(batch, flags):
            logs = model.train_step(batch)
            if replica_state:
                means = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.MEAN, [tf.identity(variable.value) for variable in replica_state]
                )
                for variable, mean in zip(replica_state, means):
                    variable.assign(mean)
            if not names:
                names.extend(sorted(logs))
            values = [tf.cast(tf.reshape(logs[name], []), tf.float32) for name in names]
            return tf.stack(values + tf.unstack(flags))

        @tf.function
        def step_function(iterator, flags):
            per_replica = strategy.run(replica_step, args=(next(iterator), flags))
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

        return step_function, names

    def _run_step(self, iterator, elapsed: float, stop_requested: bool) -> tuple[dict, float, bool]:
        flags = tf.constant([elapsed, float(stop_requested)], tf.float32)
        if self.preemption_handler is not None:
            reduced = self.preemption_handler.run(self._step_function, iterator, flags)
        else:
            reduced = self._step_function(iterator, flags)
        values = reduced.numpy().tolist()
        logs = dict(zip(self.metric_names, values[:-2]))
        return logs, values[-2], values[-1] > 0

    # --- the loop ---
    def fit(self) -> dict:
        """Runs (or resumes) training to `steps`; returns the history and what happened.

        Returns:
            dict with `history` (metric name → per-epoch values, including epochs before a restart),
            `steps` (global step reached), `resumed_from` (the step restored at start, 0 for a fresh run),
            `stopped` (`"steps"`, `"early_stopping"`, `"time"` or `"callback"`).

        Raises:
            NonFiniteLossError: a `*loss` metric became NaN/Inf (the diverged state is not checkpointed).
            DatasetExhaustedError: the dataset ended before `steps`.
        """
        model, strategy = self.model, self.strategy
        self.preemption_handler = None
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            self.manager = self._write_manager()
        start = self.restore()
        if self.preemption_checkpoint and self.checkpoint_dir is not None:
            # Saves through `save` (step-numbered, chief only) at a step all workers agree on, then exits (42).
            self.preemption_handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                strategy.cluster_resolver, self.checkpoint, str(self.checkpoint_dir),
                tf.distribute.experimental.TerminationConfig(save_fn=self.save),
            )
        self._check_workers_agree(start)
        self.resumed_from = start
        history = json.loads(self.history_json.numpy().decode())
        if start >= self.steps:
            return {"history": history, "steps": start, "resumed_from": start, "stopped": "steps"}

        self._step_function, self.metric_names = self._make_step_function()
        dataset = strategy.distribute_datasets_from_function(lambda context: self.dataset_fn(context, start))
        iterator = iter(dataset)
        writer = tf.summary.create_file_writer(str(self.tensorboard)) if self.tensorboard and self.is_chief else None
        if self.verbose and start:
            print(f"resumed from step {start} ({tf.train.latest_checkpoint(str(self.checkpoint_dir))})", flush=True)

        model.stop_training = False
        self.callbacks.on_train_begin()
        clock_start = time.perf_counter()
        stop_requested, stopped, logs = False, "steps", {}
        step = start
        while step < self.steps:
            epoch, batch = divmod(step, self.steps_per_epoch)
            if batch == 0:
                model.reset_metrics()
            if batch == 0 or step == start:
                self.callbacks.on_epoch_begin(epoch)
            self.callbacks.on_train_batch_begin(batch)
            try:
                logs, elapsed, stop_agreed = self._run_step(
                    iterator, time.perf_counter() - clock_start, stop_requested
                )
            except (tf.errors.OutOfRangeError, StopIteration):
                raise DatasetExhaustedError(
                    dataset_exhausted_message(step, self.steps, self.steps_per_epoch)
                ) from None
            step += 1
            check_finite_loss(logs, step, self._kept_note())
            self.step.assign(step)
            self.callbacks.on_train_batch_end(batch, dict(logs))
            stop_requested = stop_requested or model.stop_training
            if not self.multi_worker and model.stop_training:
                stop_agreed = True
            if self.minutes is not None and elapsed >= 60.0 * self.minutes:
                stopped = "time"
            elif stop_agreed:
                stopped = "callback"
            epoch_end = step % self.steps_per_epoch == 0 or step == self.steps or stopped != "steps"
            if epoch_end:
                epoch_logs = dict(logs)
                self.callbacks.on_epoch_end(epoch, epoch_logs)
                if model.stop_training and not self.multi_worker and stopped == "steps":
                    stopped = "callback"
                for name, value in epoch_logs.items():
                    history.setdefault(name, []).append(float(value))
                history.setdefault("step", []).append(step)
                if self.early_stopping is not None and self._early_stop(epoch_logs):
                    stopped = "early_stopping"
                self.history_json.assign(json.dumps(history))
                if writer is not None:
                    with writer.as_default(step=step):
                        for name, value in epoch_logs.items():
                            tf.summary.scalar(f"epoch_{name}", float(value))
                    writer.flush()
                if self.verbose:
                    metrics = " ".join(f"{name} {float(value):.4f}" for name, value in epoch_logs.items())
                    print(f"epoch {epoch + 1} step {step}/{self.steps} {time.perf_counter() - clock_start:.1f} s "
                          f"{metrics}", flush=True)
            if epoch_end or (self.checkpoint_every and step % self.checkpoint_every == 0):
                self.save()
            if stopped != "steps":
                break
        self.callbacks.on_train_end(dict(logs))
        if writer is not None:
            writer.close()
        return {"history": history, "steps": step, "resumed_from": start, "stopped": stopped}

    def _early_stop(self, epoch_logs: dict) -> bool:
        monitor = self.early_stopping.monitor
        if monitor not in epoch_logs:
            raise ValueError(f"Early stopping monitors {monitor!r}, but the epoch's metrics are {sorted(epoch_logs)}")
        value = float(epoch_logs[monitor])
        if self.early_stopping.improved(value, float(self.best.numpy())):
            self.best.assign(value)
            self.wait.assign(0)
            return False
        self.wait.assign_add(1)
        return int(self.wait.numpy()) >= self.early_stopping.patience

    def _kept_note(self) -> str:
        if self.checkpoint_dir is None:
            return ""
        latest = tf.train.latest_checkpoint(str(self.checkpoint_dir))
        return f"The last good checkpoint is {latest}. " if latest else "No checkpoint had been written yet. "

    def _check_workers_agree(self, start: int) -> None:
        """All workers must restore the same step (a checkpoint directory that is not shared breaks this)."""
        if not self.multi_worker:
            return
        strategy = self.strategy

        @tf.function
        def gather(value):
            return strategy.gather(strategy.run(tf.identity, args=(value,)), axis=0)

        steps = gather(tf.constant([float(start)])).numpy()
        low, high = steps.min(), steps.max()
        if float(low) != float(high):
            raise RuntimeError(
                f"Workers restored different steps ({float(low):.0f} to {float(high):.0f}): the checkpoint directory "
                f"{self.checkpoint_dir} must be one shared location (NFS, GCS, ...) that every worker reads"
            )


class _Callbacks:
    """Keras callbacks called by the driver; all share one logs dict per call, so a callback's additions
    (e.g. `validation_accuracy`) reach the history and early stopping."""

    def __init__(self, callbacks, model, steps_per_epoch):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params({"verbose": 0, "steps": steps_per_epoch})

    def __getattr__(self, hook):
        def call(*args):
            for callback in self.callbacks:
                getattr(callback, hook)(*args)

        return call


def final_weights(model: keras.Model) -> list[np.ndarray]:
    """The model's weights as numpy arrays (read locally: no collective, safe on any worker)."""
    return [np.array(variable.numpy()) for variable in model.weights]


def train_distributed(config: TrainConfig, callbacks=()) -> dict:
    """`mssl_tf.training.train` for `DistributedTrainer`: same config, outputs and summary as the `fit` path.

    Run the same command on every worker (with its own `TF_CONFIG`). Checkpoints go to `config.backup_dir`
    (default `<output>/backup`), which must be one directory every worker reads; the chief writes
    `<output>/model.keras` and `<output>/train.json`.
    """
    # A checkpoint, if any, overrides an --init-from initialization.
    strategy, model, train_images, validation_images = prepare(config)
    if config.jit_compile:
        print("note: the distributed driver runs its step without XLA (--jit-compile applies to fit)", flush=True)

    clock = TrainingClock()
    curve = validation_curve(config, model, validation_images, clock)
    all_callbacks = [clock, curve, *callbacks]
    if config.minutes:
        all_callbacks.append(TimeBudget(config.minutes, clock))
    all_callbacks.extend(learning_rate_schedule(config, clock))
    output = Path(config.output)
    trainer = DistributedTrainer(
        model, strategy, distributed_dataset_fn(config, train_images),
        steps=config.steps, steps_per_epoch=config.steps_per_epoch,
        checkpoint_dir=config.backup_dir or output / "backup", checkpoint_every=config.backup_every,
        tensorboard=config.tensorboard,
        early_stopping=EarlyStopping(config.early_stop, config.patience) if config.early_stop else None,
        callbacks=all_callbacks, clock=clock, preemption_checkpoint=config.preemption_checkpoint,
    )
    result = trainer.fit()

    # Every worker saves (reading the replicas' metric variables is collective); only the chief's copy stays.
    model_directory = distribute.write_directory(output, strategy)
    model_directory.mkdir(parents=True, exist_ok=True)
    model.save(model_directory / "model.keras")
    distribute.remove_worker_directory(output, strategy)
    summary = run_summary(
        config, clock.training_seconds(), result["steps"], curve.points, result["history"],
        resumed_from=result["resumed_from"], stopped=result["stopped"], workers=distribute.worker_count(strategy),
        replicas=strategy.num_replicas_in_sync,
    )
    if distribute.is_chief(strategy):
        write_train_summary(output, summary)
    return summary
