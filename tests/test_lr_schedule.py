"""`--lr-schedule cosine`: the learning rate each optimizer step runs with, in a real (tiny) training run."""

import math

import keras
import numpy as np

from mssl_tf.data import class_splits
from mssl_tf.training import TrainConfig, train


class LearningRates(keras.callbacks.Callback):
    """The learning rate each step ran with (read after the step, before the next one sets it)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def toy_dataset():
    rng = np.random.default_rng(0)
    return class_splits.register_arrays("toy-lr", {
        split: rng.integers(0, 256, (classes, 6, 16, 16, 1), dtype=np.uint8)
        for split, classes in (("train", 5), ("val", 3), ("test", 3))})


def run_rates(tmp_path, **settings):
    rates = LearningRates()
    train(TrainConfig(dataset=toy_dataset(), backbone="conv4", ways=3, shots=1, queries=2, steps=4, steps_per_epoch=4,
                      validate_ways=3, validate_episodes=2, output=str(tmp_path / "run"), **settings),
          callbacks=[rates])
    return rates.rates


def test_cosine_falls_from_the_base_rate_along_a_half_cosine_over_the_steps(tmp_path):
    rates = run_rates(tmp_path, learning_rate=0.01, lr_schedule="cosine", minutes=1000)
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in range(4)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_the_default_schedule_keeps_its_steps(tmp_path):
    # Read after each step: ExponentialDecay at the optimizer's incremented iteration count (1, 2, 3, 4).
    np.testing.assert_allclose(run_rates(tmp_path, learning_rate=0.01, halve_every=2), [0.01, 0.005, 0.005, 0.0025],
                               rtol=1e-6)
