"""Run as a script: one meta-SSL training step on one device and under MirroredStrategy on 2 logical CPUs, on the
same meta-batch of unsupervised tasks (one augmentation-made task, one transformation task: a mixture).

Prints a JSON line per method with the losses and the size of the update and of the difference. A separate process
is needed because logical devices must be configured before TensorFlow initializes (as tests/workers/mirrored_step.py).

Negative controls (`*_bug` entries, tests/workers/replica_bugs.py): the memory network and the hyper-network with
the 1/replicas loss scaling forgotten, and BYOL + ProtoNet with its heads' batch norm synchronized across replicas
(each task's statistics mixed with the other replica's task), must fail the comparison.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mssl_tf import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.data import EpisodeSpec, load_split  # noqa: E402
from mssl_tf.data import unsupervised_tasks  # noqa: E402
from tests.workers import replica_bugs  # noqa: E402
from tests.workers.replica_check import fit_from, report  # noqa: E402

OPTIONS = {
    "memory": {"write_passes": 2},
    "hypernetwork": {"inner_steps": 1},
    "maml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},  # optimization-based meta-SSL
    "byol_protonet": {"hidden_units": [32], "projection_units": 16, "total_steps": 10},  # BYOL + ProtoNet jointly
}
BUGS = {
    "memory_unscaled_loss_bug": (replica_bugs.MemoryNetworkUnscaledLoss, OPTIONS["memory"]),
    "hypernetwork_unscaled_loss_bug": (replica_bugs.HyperNetworkUnscaledLoss, OPTIONS["hypernetwork"]),
    # The heads' statistics move the BYOL term only: weighted up, it dominates the update the check compares.
    "byol_protonet_global_head_statistics_bug": (replica_bugs.BYOLProtoNetGlobalHeadStatistics,
                                                 {**OPTIONS["byol_protonet"], "byol_weight": 10.0}),
}


def build(name):
    if name in BUGS:
        cls, options = BUGS[name]
        return cls(mssl_tf.conv4(filters=16), **options)  # a control needs no full-width backbone
    return mssl_tf.build_method(name, mssl_tf.conv4(), **OPTIONS[name])


def mixed_batch():
    """Task 0 augmentation-made, task 1 transformation prediction (both 5-way 1-shot, 2 queries)."""
    images = unsupervised_tasks.unlabeled_images(load_split("train")[:50])
    spec = EpisodeSpec(5, 1, 2)
    seed = tf.constant([3, 0], tf.int64)
    first = unsupervised_tasks.task_maker("augmentation", images, spec)(seed)
    second = unsupervised_tasks.task_maker("transformation", images, spec)(seed)
    return {key: tf.stack([first[key], second[key]]) for key in first}


def main(names):
    batch = mixed_batch()
    for name in names:
        report(name, lambda strategy, initial, name=name: fit_from(
            strategy, lambda: build(name), initial, batch, 1, lambda: keras.optimizers.SGD(0.05)))


if __name__ == "__main__":
    main(sys.argv[1:] or [*OPTIONS, *BUGS])
