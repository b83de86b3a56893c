"""Run as a script by tests/test_multiworker.py: the negative control of the multi-worker equivalence.

`python -m tests.workers.multiworker_bug_worker OUT` on each worker of a 2-worker cluster: exactly the equivalence
run of tests/workers/multiworker_worker.py (same episodes, seeds, steps and plain SGD), but for ProtoNet whose
`train_step` forgets the 1/replicas loss scaling (tests/workers/replica_bugs.py). Writes
`OUT/protonet_unscaled_loss_bug_<task>.npz`, `..._initial.npz` and, on the chief, `..._reference.npz` (the same
class trained by `model.fit` in one process, where the bug is invisible).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf import distribute  # noqa: E402
from mssl_tf.data import episode_dataset, load_split  # noqa: E402
from tests.workers import multiworker_worker  # noqa: E402
from tests.workers.multiworker_worker import META_BATCH, SEED, SPEC, STEPS, task_name  # noqa: E402
from tests.workers.replica_bugs import ProtoNetUnscaledLoss  # noqa: E402

NAME = "protonet_unscaled_loss_bug"


def build():
    return ProtoNetUnscaledLoss(mssl_tf.conv4(filters=16))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    strategy = distribute.get_strategy("multiworker" if os.environ.get("TF_CONFIG") else "default")
    images = load_split("train")[:60]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build()
        model.compile(keras.optimizers.SGD(0.05))
    initial = multiworker_worker.final_weights(model)
    trainer = multiworker_worker.DistributedTrainer(
        model, strategy, multiworker_worker.episode_dataset_fn(images, SPEC, META_BATCH, SEED), steps=STEPS,
        steps_per_epoch=STEPS, verbose=False,
    )
    result = trainer.fit()
    np.savez(out / f"{NAME}_{task_name(strategy)}.npz", *multiworker_worker.final_weights(model))
    np.savez(out / f"{NAME}_{task_name(strategy)}_initial.npz", *initial)
    print(json.dumps({
        "method": NAME, "task": task_name(strategy), "replicas": strategy.num_replicas_in_sync,
        "loss": result["history"]["loss"], "steps": result["steps"],
        "trainable": [index for index, weight in enumerate(model.weights) if weight.trainable],
    }), flush=True)
    if distribute.is_chief(strategy):
        reference = build()
        reference.compile(keras.optimizers.SGD(0.05))
        reference.set_weights(initial)
        history = reference.fit(episode_dataset(images, SPEC, META_BATCH, seed=SEED), steps_per_epoch=STEPS, epochs=1,
                                verbose=0)
        np.savez(out / f"{NAME}_reference.npz", *multiworker_worker.final_weights(reference))
        print(json.dumps({"method": NAME, "task": "reference", "loss": history.history["loss"]}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
