"""Our side of the peers benchmark: one mssl-tf (or plain TF) training workload, timed, in this process.

    PYTHONPATH=. python benchmarks/peers/ours.py WORKLOAD [--inner-steps K] [--warmup W] [--steps N] [--quick]
                                                          [--ways W] [--shots S] [--queries Q] [--meta-batch B]
                                                          [--tasks-per-pass T]

WORKLOAD is `maml` (mssl-tf's second-order MAML, its default grouped-convolution mode), `protonet` (mssl-tf's
ProtoNet), `plain_tf_protonet` (`benchmarks/throughput.py`'s plain TF reference) or `simclr` (mssl-tf's
SimCLR). Every step trains on the same fixed random inputs of the issue's shapes (values do not change the
arithmetic's cost), fed as tensors to the model's own `train_step` compiled with `tf.function` as `fit` compiles
it, without `fit`'s iterator and callbacks around it. Prints one `harness.emit` line for `compare.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

harness.pin_thread_environment()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(harness.THREADS)
tf.config.threading.set_inter_op_parallelism_threads(harness.THREADS)

WORKLOADS = ("maml", "protonet", "plain_tf_protonet", "simclr")


def episode_labels(ways: int, per_class: int, tasks: int | None = None) -> np.ndarray:
    """Labels 0..ways-1, each repeated `per_class` times (class-major, as the episode pipeline orders them)."""
    labels = np.repeat(np.arange(ways, dtype=np.int32), per_class)
    return labels if tasks is None else np.tile(labels, [tasks, 1])


def random_images(rng, *leading) -> np.ndarray:
    return rng.random((*leading, *harness.IMAGE_SHAPE), dtype=np.float32)


def compiled_train_step(model, batch):
    """The model's `train_step` on `batch`, compiled as `fit` compiles it (one `tf.function`, default strategy)."""
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step, reduce_retracing=True)
    tensors = {key: tf.constant(value) for key, value in batch.items()}
    return lambda: step(tensors)


def maml_step(inner_steps, ways, shots, queries, meta_batch, tasks_per_pass=None):
    rng = np.random.default_rng(0)
    model = mssl_tf.build_method("maml", mssl_tf.conv4(), ways=ways, inner_steps=inner_steps,
                                 inner_learning_rate=harness.INNER_LEARNING_RATE)
    model.tasks_per_pass = tasks_per_pass  # `mssl-tf train --tasks-per-pass`: the meta-batch in groups
    model.compile(keras.optimizers.Adam(harness.OUTER_LEARNING_RATE))
    batch = {
        "support_images": random_images(rng, meta_batch, ways * shots),
        "support_labels": episode_labels(ways, shots, meta_batch),
        "query_images": random_images(rng, meta_batch, ways * queries),
        "query_labels": episode_labels(ways, queries, meta_batch),
    }
    return compiled_train_step(model, batch)


def protonet_step(ways, shots, queries):
    rng = np.random.default_rng(0)
    model = mssl_tf.build_method("protonet", mssl_tf.conv4())
    model.compile(keras.optimizers.Adam(harness.OUTER_LEARNING_RATE))
    batch = {
        "support_images": random_images(rng, 1, ways * shots),
        "support_labels": episode_labels(ways, shots, 1),
        "query_images": random_images(rng, 1, ways * queries),
        "query_labels": episode_labels(ways, queries, 1),
    }
    return compiled_train_step(model, batch)


def plain_tf_protonet_step(ways, shots, queries):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from throughput import PlainProtoNet

    rng = np.random.default_rng(0)
    model = PlainProtoNet(seed=0)
    support = tf.constant(random_images(rng, ways * shots))
    query = tf.constant(random_images(rng, ways * queries))
    return lambda: model.step(support, query, ways, shots, queries)


def simclr_step(batch_size):
    rng = np.random.default_rng(0)
    model = mssl_tf.build_method("simclr", mssl_tf.conv4())
    model.compile(keras.optimizers.Adam(harness.OUTER_LEARNING_RATE))
    return compiled_train_step(model, {"views": random_images(rng, batch_size, 2)})


def build_step(args):
    maml, protonet, batch_size = harness.task_shapes(args.quick, harness.maml_overrides(args))
    if args.workload == "maml":
        return (maml_step(args.inner_steps, **maml, tasks_per_pass=args.tasks_per_pass),
                {**maml, "inner_steps": args.inner_steps, "tasks_per_pass": args.tasks_per_pass})
    if args.workload == "simclr":
        return simclr_step(batch_size), {"batch_size": batch_size, "views": 2}
    builder = protonet_step if args.workload == "protonet" else plain_tf_protonet_step
    return builder(**protonet), protonet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--quick", action="store_true", help="smaller meta-batch, ways and batch (sanity run)")
    harness.add_maml_shape_arguments(parser)
    parser.add_argument("--tasks-per-pass", type=int, default=None, help="maml: the meta-batch's gradient this many "
                        "tasks at a time (mssl-tf train --tasks-per-pass); default all at once")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    step, shapes = build_step(args)

    def finish(outputs):  # reading a value waits for every op of the step
        return float(outputs["loss"] if isinstance(outputs, dict) else outputs)

    result = harness.time_steps(step, args.warmup, args.steps, finish)
    harness.emit({
        "side": "ours", "workload": args.workload, "shapes": shapes, **result,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "mssl_tf": getattr(mssl_tf, "__version__", None), "numpy": np.__version__},
    })


if __name__ == "__main__":
    main()
