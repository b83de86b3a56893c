"""Guards and stops, in one process: a NaN loss stops training naming the step and keeps the last good
checkpoint (fit and the driver), a dataset that runs dry is an error, the same seed gives the same metrics,
and the driver's early stopping, time budget and TensorBoard scalars.

The NaN tests use a plain Keras regression model (compiled loss, Keras' own `train_step`): Conv-4 methods
swallow a NaN input (max-pooling drops NaN) and stay finite under absurd learning rates (batch norm is scale
invariant), while a NaN target makes the mean squared error NaN at exactly the poisoned step. It also shows
that the driver runs any `keras.Model`, not only the episodic methods."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf.data import EpisodeSpec
from mssl_tf.training.datasets import episode_dataset_fn, episodes_from_step, global_batch_dataset_fn
from mssl_tf.training.distributed import DistributedTrainer, EarlyStopping
from mssl_tf.training.guards import (
    DatasetExhaustedError,
    DatasetExhaustionGuard,
    NonFiniteLossError,
    NonFiniteLossGuard,
    check_finite_loss,
)
from tests.conftest import labelled_classes

SPEC = EpisodeSpec(3, 1, 2)
META_BATCH = 2
BAD_STEP = 3  # the step whose batch holds a NaN


def compiled_protonet(learning_rate=0.01):
    keras.utils.set_random_seed(0)
    model = mssl_tf.build_method("protonet", mssl_tf.conv4())
    model.compile(keras.optimizers.SGD(learning_rate))
    return model


def compiled_regression():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    return model


def regression_batches(start_step=0, poison=True):
    """Global batches (x, y) of a linear regression, batch `i` keyed by `i`; with `poison`, the targets of step
    BAD_STEP (counted from 1) are NaN."""

    def batch(index):
        x = tf.random.stateless_normal([4, 4], tf.stack([index, tf.constant(0, tf.int64)]))
        y = tf.reduce_sum(x, axis=1, keepdims=True)
        return x, tf.where(tf.equal(index, BAD_STEP - 1) & poison, y * np.nan, y)

    return tf.data.Dataset.counter(start_step).map(batch)


poisoned = regression_batches


def finite(weights):
    return all(np.isfinite(weight).all() for weight in weights)


def test_check_finite_loss_names_the_metric_and_step():
    check_finite_loss({"loss": 1.0, "accuracy": float("nan")}, 5)  # only *loss entries are watched
    with pytest.raises(NonFiniteLossError, match=r"contrastive_loss is inf after training step 7"):
        check_finite_loss({"contrastive_loss": float("inf")}, 7)


def test_fit_stops_at_the_nan_step_and_keeps_the_last_good_backup(tmp_path):
    model = compiled_regression()
    backup = keras.callbacks.BackupAndRestore(tmp_path / "backup", save_freq=1)
    with pytest.raises(NonFiniteLossError, match=rf"loss is nan after training step {BAD_STEP};.*last good backup"):
        model.fit(poisoned(), steps_per_epoch=5, epochs=1, verbose=0,
                  callbacks=[NonFiniteLossGuard(str(tmp_path / "backup")), backup])
    metadata = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert metadata == {"epoch": 0, "batch": BAD_STEP - 2}  # written after step BAD_STEP - 1, not after the bad one
    restored = compiled_regression()
    restored.load_weights(tmp_path / "backup" / "latest.weights.h5")
    assert int(restored.optimizer.iterations.numpy()) == BAD_STEP - 1
    assert finite(restored.get_weights())
    assert not finite(model.get_weights()), "the bad step did reach the weights: the guard is what stopped it"


def test_driver_stops_at_the_nan_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model = compiled_regression()
    strategy = tf.distribute.get_strategy()
    trainer = DistributedTrainer(
        model, strategy, global_batch_dataset_fn(poisoned), steps=6, steps_per_epoch=3,
        checkpoint_dir=tmp_path / "checkpoints", checkpoint_every=1, verbose=False,
    )
    with pytest.raises(NonFiniteLossError, match=rf"loss is nan after training step {BAD_STEP};.*ckpt-{BAD_STEP - 1}"):
        trainer.fit()
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith(f"ckpt-{BAD_STEP - 1}")
    restored = compiled_regression()
    resumed = DistributedTrainer(restored, strategy, global_batch_dataset_fn(poisoned), steps=6,
                                 checkpoint_dir=tmp_path / "checkpoints", verbose=False)
    assert resumed.restore() == BAD_STEP - 1
    assert finite(restored.get_weights())


def test_fit_refuses_a_dataset_that_runs_dry():
    model = compiled_regression()
    dataset = regression_batches(poison=False).take(6)
    with pytest.raises(DatasetExhaustedError, match="ran out after 6 steps"), pytest.warns(UserWarning, match="ran out"):
        model.fit(dataset, steps_per_epoch=4, epochs=2, verbose=0, callbacks=[DatasetExhaustionGuard(4, 8)])


def test_driver_refuses_a_dataset_that_runs_dry():
    model = compiled_regression()

    def short(start_step):
        return regression_batches(start_step, poison=False).take(5)

    trainer = DistributedTrainer(model, tf.distribute.get_strategy(), global_batch_dataset_fn(short), steps=8,
                                 steps_per_epoch=4, verbose=False)
    with pytest.raises(DatasetExhaustedError, match=r"ran out after 5 steps \(epoch 2, after batch 1 of 4\)"):
        trainer.fit()


def driver_run(tmp_path, **options):
    model = compiled_protonet()
    trainer = DistributedTrainer(
        model, tf.distribute.get_strategy(), episode_dataset_fn(labelled_classes(), SPEC, META_BATCH, seed=2),
        steps=options.pop("steps", 4), steps_per_epoch=2, verbose=False, **options,
    )
    return trainer.fit(), model


def test_same_seed_same_metrics(tmp_path):
    first, first_model = driver_run(tmp_path)
    second, second_model = driver_run(tmp_path)
    assert first["history"] == second["history"] and len(first["history"]["loss"]) == 2
    for a, b in zip(first_model.get_weights(), second_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    histories = []
    for _ in range(2):
        model = compiled_protonet()
        dataset = episodes_from_step(labelled_classes(), SPEC, META_BATCH, seed=2)
        histories.append(model.fit(dataset, steps_per_epoch=2, epochs=2, verbose=0).history)
    assert histories[0] == histories[1]
    # fit and the driver run the same train_step on the same batches.
    np.testing.assert_allclose(histories[0]["loss"], first["history"]["loss"], rtol=1e-5)


class ScriptedScore(keras.callbacks.Callback):
    """Adds a scripted `score` to each epoch's logs (the way ValidationCurve adds validation_accuracy)."""

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = [3.0, 2.0, 2.5, 1.0, 5.0][epoch]


def test_driver_early_stopping_time_budget_and_tensorboard(tmp_path):
    # score improves at epoch 1 only; patience 2 → stops after epoch 3, before the 5 planned epochs.
    result, _ = driver_run(tmp_path, steps=10, callbacks=[ScriptedScore()],
                           early_stopping=EarlyStopping("score", patience=2, mode="max"), tensorboard=tmp_path / "tb")
    assert result["stopped"] == "early_stopping" and result["history"]["score"] == [3.0, 2.0, 2.5]
    assert result["steps"] == 6
    tags = set()
    for event_file in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_accuracy", "epoch_score"} <= tags

    timed, _ = driver_run(tmp_path, steps=10, minutes=1e-9)
    assert timed["stopped"] == "time" and timed["steps"] == 1
