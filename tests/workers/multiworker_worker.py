"""Run as a script by tests/test_multiworker.py and tests/test_resume.py: one training process.

`equivalence OUT`: under the strategy of the environment (`MultiWorkerMirroredStrategy` when `TF_CONFIG` is
set), trains ProtoNet and MAML for a few steps with the distributed driver and writes this worker's initial
and final weights to `OUT/<method>_<task>.npz`; the chief then trains the same initial weights with `model.fit`
in this process, without distribution, on the same global batches, and writes `OUT/<method>_reference.npz`.
Plain SGD, so a gradient off by the replica count changes the update.

`train OUT [--strategy S] [--delay SECONDS] [--learning-rate LR]`: `mssl_tf.training.train` on a small
5-way 1-shot config (the command the kill-and-resume tests run twice), sleeping `--delay` after every step so
a test can kill it part-way. The chief writes `OUT/run/model.keras`; every process prints its summary as one
JSON line.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf import distribute  # noqa: E402
from mssl_tf.data import EpisodeSpec, episode_dataset, load_split  # noqa: E402
from mssl_tf.training.datasets import episode_dataset_fn  # noqa: E402
from mssl_tf.training.distributed import DistributedTrainer, final_weights  # noqa: E402

SPEC = EpisodeSpec(5, 1, 5)
META_BATCH = 2
STEPS = 3
SEED = 11
STEPS_PER_EPOCH = 8  # of the `train` runs (8 steps): one validation, the costly part of these short runs
OPTIONS = {
    "protonet": {},
    "maml": {"ways": 5, "inner_steps": 1, "inner_learning_rate": 0.4},
}


def task_name(strategy) -> str:
    task_type, index = distribute.task(strategy)
    return f"{task_type}{index}" if task_type else "single"


def equivalence(out: Path) -> None:
    strategy = distribute.get_strategy("multiworker" if os.environ.get("TF_CONFIG") else "default")
    images = load_split("train")[:60]
    for name, options in OPTIONS.items():
        equivalence_run(out, strategy, images, name,
                        lambda options=options, name=name: mssl_tf.build_method(name, mssl_tf.conv4(), **options))


def equivalence_run(out: Path, strategy, images, name: str, build) -> None:
    """`build()`'s model trained by the driver under `strategy` and, on the chief, by `fit` in one process from the
    same start: writes `<name>_<task>.npz`, `<name>_<task>_initial.npz`, `<name>_reference.npz`, prints JSON lines."""
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build()
        model.compile(keras.optimizers.SGD(0.05))
    initial = final_weights(model)
    trainer = DistributedTrainer(
        model, strategy, episode_dataset_fn(images, SPEC, META_BATCH, SEED), steps=STEPS, steps_per_epoch=STEPS,
        verbose=False,
    )
    result = trainer.fit()
    np.savez(out / f"{name}_{task_name(strategy)}.npz", *final_weights(model))
    np.savez(out / f"{name}_{task_name(strategy)}_initial.npz", *initial)
    print(json.dumps({
        "method": name, "task": task_name(strategy), "replicas": strategy.num_replicas_in_sync,
        "loss": result["history"]["loss"], "steps": result["steps"],
        "trainable": [index for index, weight in enumerate(model.weights) if weight.trainable],
    }), flush=True)
    if distribute.is_chief(strategy):
        reference = build()
        reference.compile(keras.optimizers.SGD(0.05))
        reference.set_weights(initial)
        history = reference.fit(
            episode_dataset(images, SPEC, META_BATCH, seed=SEED), steps_per_epoch=STEPS, epochs=1, verbose=0
        )
        np.savez(out / f"{name}_reference.npz", *final_weights(reference))
        print(json.dumps({"method": name, "task": "reference", "loss": history.history["loss"]}), flush=True)


class Delay(keras.callbacks.Callback):
    """Sleeps after every step: leaves a test time to kill the run between two checkpoints."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def train(out: Path, strategy: str, delay: float, learning_rate: float, preemption: bool = False) -> None:
    from mssl_tf.training import TrainConfig
    from mssl_tf.training import train as run

    config = TrainConfig(
        method="protonet", split="val", ways=5, shots=1, queries=5, meta_batch=2, steps=8, steps_per_epoch=STEPS_PER_EPOCH,
        learning_rate=learning_rate, halve_every=6, seed=3, strategy=strategy, validate_episodes=10,
        backup_every=2, output=str(out / "run"), preemption_checkpoint=preemption,
    )
    summary = run(config, callbacks=[Delay(delay)] if delay else [])
    print(json.dumps({key: summary.get(key) for key in ("steps", "resumed_from", "history", "curve")}), flush=True)


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["equivalence", "train"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--preemption", action="store_true", help="PreemptionCheckpointHandler (SIGTERM → save, exit)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "equivalence":
        equivalence(args.out)
    else:
        train(args.out, args.strategy, args.delay, args.learning_rate, args.preemption)


if __name__ == "__main__":
    main(sys.argv[1:])
