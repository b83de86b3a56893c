"""Guards that stop training loudly: a non-finite loss, a dataset that runs dry before the run is over.

The same checks serve `model.fit` (as callbacks) and the distributed driver (`mssl_tf.training.distributed`).
Steps are counted from 1: "step 3" is the third optimizer step of the run, counted across restarts.
"""

from __future__ import annotations

import math

import keras


class NonFiniteLossError(FloatingPointError):
    """A loss (or another metric named `*loss`) became NaN or infinite."""


class DatasetExhaustedError(RuntimeError):
    """The training dataset ended before the planned number of steps."""


def loss_names(logs: dict) -> list[str]:
    """The entries of `logs` the loss guard watches: every metric whose name ends with `loss`."""
    return [name for name in logs if name.endswith("loss")]


def check_finite_loss(logs: dict, step: int, checkpoint_note: str = "") -> None:
    """Raises `NonFiniteLossError` naming `step` when a `*loss` entry of `logs` is NaN or infinite.

    Args:
        logs: metric name → value after the step (a running mean over the epoch is fine: it turns
            non-finite at the first non-finite step).
        step: the step that produced `logs`, counted from 1.
        checkpoint_note: what was kept, appended to the message (e.g. the last good checkpoint).
    """
    for name in loss_names(logs):
        value = float(logs[name])
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"{name} is {value} after training step {step}; stopped there without saving the diverged "
                f"weights. {checkpoint_note}Lower the learning rate, check the data of that step, or resume "
                "from the last checkpoint with different settings."
            )


def dataset_exhausted_message(steps_done: int, steps_planned: int, steps_per_epoch: int) -> str:
    epoch, batch = divmod(steps_done, steps_per_epoch)
    return (
        f"The training dataset ran out after {steps_done} steps (epoch {epoch + 1}, after batch {batch} of "
        f"{steps_per_epoch}); the run needs {steps_planned}. Give a dataset that repeats (e.g. "
        "`dataset.repeat()` or `episode_dataset(..., num_episodes=None)`) or lower the number of steps."
    )


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` with `NonFiniteLossError` at the first step whose loss is NaN or infinite.

    Put it before `BackupAndRestore` / checkpoint callbacks in the list, so that the diverged weights are
    never written over the last good backup.

    Args:
        backup_dir: where the last good backup lives, named in the error message.
    """

    def __init__(self, backup_dir: str | None = None):
        super().__init__()
        self.backup_dir = backup_dir

    def on_train_batch_end(self, batch, logs=None):
        if not logs:
            return
        note = f"The last good backup is in {self.backup_dir}. " if self.backup_dir else ""
        check_finite_loss(logs, int(self.model.optimizer.iterations.numpy()), note)


class DatasetExhaustionGuard(keras.callbacks.Callback):
    """Turns Keras' "Your input ran out of data" warning into `DatasetExhaustedError`.

    `fit` ends an epoch early when its dataset runs dry and only warns; this callback counts the batches of
    every epoch and raises when an epoch ends short without anything having asked training to stop.

    Args:
        steps_per_epoch: the `steps_per_epoch` given to `fit`.
        steps: the number of steps the run plans (for the message).
    """

    def __init__(self, steps_per_epoch: int, steps: int | None = None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.steps = steps
        self.batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.batches < self.steps_per_epoch and not self.model.stop_training:
            done = int(self.model.optimizer.iterations.numpy())
            raise DatasetExhaustedError(
                dataset_exhausted_message(done, self.steps or done + 1, self.steps_per_epoch)
            )


class StepLimit(keras.callbacks.Callback):
    """Stops `fit` once the optimizer has taken `steps` steps in total (counted across restarts)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True
