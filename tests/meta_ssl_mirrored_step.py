"""Run as a script: one meta-SSL training step on one device and under MirroredStrategy on 2 logical CPUs, on the
same meta-batch of unsupervised tasks (one augmentation-made task, one transformation task: a mixture).

Prints a JSON line per method with the losses and the size of the update and of the difference. A separate process
is needed because logical devices must be configured before TensorFlow initializes (as tests/mirrored_step.py).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mssl_tf import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.data import EpisodeSpec, load_split  # noqa: E402
from mssl_tf.data import unsupervised_tasks  # noqa: E402

OPTIONS = {
    "memory": {"write_passes": 2},
    "hypernetwork": {"inner_steps": 1},
    "maml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},  # optimization-based meta-SSL
}


def one_step(strategy, name, initial_weights, batch):
    with strategy.scope():
        model = mssl_tf.build_method(name, mssl_tf.conv4(), **OPTIONS[name])
        if initial_weights is not None:
            model.set_weights(initial_weights)
        # Plain SGD: a gradient off by a factor (e.g. the replica count) changes the update, unlike Adam's first step.
        model.compile(keras.optimizers.SGD(0.05))
    weights = [w.copy() for w in model.get_weights()]
    initial_trainable = [v.numpy() for v in model.trainable_variables]
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)
    return weights, history.history["loss"][0], initial_trainable, [v.numpy() for v in model.trainable_variables]


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
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name in names:
        keras.utils.set_random_seed(0)
        initial, single_loss, initial_trainable, single_weights = one_step(
            tf.distribute.get_strategy(), name, None, batch
        )
        _, mirrored_loss, _, mirrored_weights = one_step(mirrored, name, initial, batch)
        update = np.concatenate([(w - i).ravel() for w, i in zip(single_weights, initial_trainable)])
        difference = np.concatenate([(a - b).ravel() for a, b in zip(single_weights, mirrored_weights)])
        print(json.dumps({
            "method": name, "replicas": mirrored.num_replicas_in_sync, "single_loss": single_loss,
            "mirrored_loss": mirrored_loss, "update_norm": float(np.linalg.norm(update)),
            "difference_norm": float(np.linalg.norm(difference)),
        }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(OPTIONS))
