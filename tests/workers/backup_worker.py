"""Run as a script by tests/test_backup.py: `fit` with `AtomicBackupAndRestore` after every step, to be killed.

`python -m tests.workers.backup_worker OUT STEPS`: trains a seeded regression model (large enough that writing a
backup takes a good part of each step) for STEPS optimizer steps from wherever `OUT/backup` says, on batches that
depend only on the step, and writes `OUT/final.npz` with the final weights. Killed and started again, it must end
with the weights of an uninterrupted run.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mssl_tf.training.backup import AtomicBackupAndRestore  # noqa: E402
from mssl_tf.training.guards import StepLimit  # noqa: E402

STEPS_PER_EPOCH = 4
UNITS = 384  # ~150k parameters: a backup (weights + Adam slots) is a few MB, fsynced


def model():
    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((UNITS,)), keras.layers.Dense(UNITS, activation="tanh"),
                                keras.layers.Dense(1)])
    network.compile(keras.optimizers.Adam(1e-3), loss="mse")
    network.optimizer.build(network.trainable_variables)
    return network


def batches(start_step: int):
    def batch(step):
        seed = tf.stack([tf.constant(7, tf.int64), step])
        features = tf.random.stateless_normal([32, UNITS], seed)
        return features, tf.reduce_sum(features[:, :8], axis=1, keepdims=True)

    return tf.data.Dataset.counter(start_step).map(batch)


def main(output: str, steps: int) -> None:
    output = Path(output)
    network = model()
    backup = AtomicBackupAndRestore(output / "backup", save_freq=1)
    backup.set_model(network)
    backup.on_train_begin()  # restore now, so the data starts at the restored step (as mssl_tf.training.fit does)
    start = int(network.optimizer.iterations.numpy())
    with open(output / "starts.jsonl", "a") as log:
        log.write(json.dumps({"start": start}) + "\n")
    epochs = -(-steps // STEPS_PER_EPOCH) + (1 if start else 0)
    network.fit(batches(start), steps_per_epoch=STEPS_PER_EPOCH, epochs=epochs, verbose=0,
                callbacks=[StepLimit(steps), backup])
    np.savez(output / "final.npz", *network.get_weights(), step=int(network.optimizer.iterations.numpy()))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
