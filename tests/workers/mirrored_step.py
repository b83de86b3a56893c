"""Run as a script: one training step on one device and under MirroredStrategy on 2 logical CPUs, same batch.

Prints a JSON line per method (tests/workers/replica_check.py). A separate process is needed because logical devices must
be configured before TensorFlow initializes.

Negative controls (`*_bug` entries, tests/workers/replica_bugs.py) forget the 1/replicas scaling, once in the
shared episodic step (ProtoNet), once in Reptile's own step and once in iMAML's; VERSA's control draws its training
noise by the task's place on its replica instead of in the global meta-batch: the comparison must fail on them.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mssl_tf import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.data import EpisodeSpec, episode_dataset, load_split  # noqa: E402
from tests.workers import replica_bugs  # noqa: E402
from tests.workers.replica_check import fit_from, report  # noqa: E402

OPTIONS = {
    "protonet": {},
    "matching": {},
    "relation": {},  # class_pooling="mean" (default)
    "maml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
    "fomaml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
    "metasgd": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
    "reptile": {"ways": 5, "inner_steps": 2, "inner_learning_rate": 0.1},
    "imaml": {"ways": 5, "inner_steps": 2, "inner_learning_rate": 0.1, "cg_steps": 2},
    "maml_shared_head": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4, "head": "shared"},
    "mann": {"max_ways": 5, "controller_units": 32, "memory_slots": 16, "memory_width": 8},
    "versa": {"initial_log_variance": 0.0},  # wide classifiers from the start: the sampled noise moves the step
}
METHOD_OF = {"maml_shared_head": "maml"}  # entries that are a method with other options
BUGS = {
    "protonet_unscaled_loss_bug": (replica_bugs.ProtoNetUnscaledLoss, OPTIONS["protonet"]),
    "reptile_unscaled_direction_bug": (replica_bugs.ReptileUnscaledDirection,
                                       {**OPTIONS["reptile"], "first_order": True}),
    "imaml_unscaled_gradient_bug": (replica_bugs.IMAMLUnscaledGradient, OPTIONS["imaml"]),
    "versa_local_noise_bug": (replica_bugs.VersaLocalNoise, OPTIONS["versa"]),
}


def build(name):
    if name in BUGS:
        cls, options = BUGS[name]
        return cls(mssl_tf.conv4(filters=16), **options)  # a control needs no full-width backbone
    return mssl_tf.build_method(METHOD_OF.get(name, name), mssl_tf.conv4(), **OPTIONS[name])


def main(names):
    images = load_split("train")[:100]
    batch = next(iter(episode_dataset(images, EpisodeSpec(5, 1, 5), meta_batch=2, seed=5)))
    for name in names:
        report(name, lambda strategy, initial, name=name: fit_from(
            strategy, lambda: build(name), initial, batch, 1, lambda: keras.optimizers.SGD(0.05)))


if __name__ == "__main__":
    main(sys.argv[1:] or [*OPTIONS, *BUGS])
