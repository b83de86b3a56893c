"""Run as a script: one training step on one device and under MirroredStrategy on 2 logical CPUs, same batch.

Prints a JSON line per method (tests/workers/replica_check.py). A separate process is needed because logical devices must
be configured before TensorFlow initializes.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mssl_tf import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.data import EpisodeSpec, episode_dataset, load_split  # noqa: E402
from tests.workers.replica_check import fit_from, report  # noqa: E402

OPTIONS = {
    "protonet": {},
    "matching": {},
    "maml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
    "fomaml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
    "metasgd": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
    "reptile": {"ways": 5, "inner_steps": 2, "inner_learning_rate": 0.1},
}


def main(names):
    images = load_split("train")[:100]
    batch = next(iter(episode_dataset(images, EpisodeSpec(5, 1, 5), meta_batch=2, seed=5)))
    for name in names:
        def build(name=name):
            return mssl_tf.build_method(name, mssl_tf.conv4(), **OPTIONS[name])

        report(name, lambda strategy, initial: fit_from(
            strategy, build, initial, batch, 1, lambda: keras.optimizers.SGD(0.05)))


if __name__ == "__main__":
    main(sys.argv[1:] or list(OPTIONS))
