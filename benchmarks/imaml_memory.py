"""Peak memory of one compiled `train_step`: iMAML against second-order MAML, at 1, 5 and 20 inner steps.

TensorFlow's CPU allocator keeps statistics only when it is the BFC allocator (`TF_CPU_ALLOCATOR_USE_BFC=true`,
set here before TensorFlow starts); `tf.config.experimental.get_memory_info("CPU:0")["peak"]` is then the peak of
live tensor bytes. Each step is traced and run once, the statistics are reset, and the second run's peak above the
bytes already held (weights, optimizer, batch) is reported.

Usage:
    python benchmarks/imaml_memory.py [--output benchmarks/results/imaml_memory.json]

Prints one JSON line: {"peak_bytes": {"imaml": {"1": ..., "5": ..., "20": ...}, "maml": {...}}, ...}.
Used by tests/test_imaml.py (which asserts iMAML flat and MAML growing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# One op at a time, so the peak is a property of the graph, not of the scheduler's interleaving; no graph rewrites
# (they would only slow the tracing of 20 unrolled second-order steps).
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

from mssl_tf.backbones import FusedBatchNormalization  # noqa: E402
from mssl_tf.methods import IMAML, MAML  # noqa: E402

INNER_STEPS = (1, 5, 20)
WAYS, SHOTS, QUERIES, TASKS = 5, 5, 5, 2


def backbone():
    """One 3×3 convolution (16 filters) with Conv-4's fused batch norm and ReLU on 28×28 images, pooled and
    flattened: the first block of Conv-4, whose activations dominate its memory."""
    images = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(images)
    x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)
    return keras.Model(images, keras.layers.Flatten()(x))


def batch():
    rng = np.random.default_rng(0)
    labels = lambda count: np.tile(np.repeat(np.arange(WAYS), count), (TASKS, 1))  # noqa: E731
    return {
        "support_images": tf.constant(rng.random((TASKS, WAYS * SHOTS, 28, 28, 1)), tf.float32),
        "support_labels": tf.constant(labels(SHOTS), tf.int32),
        "query_images": tf.constant(rng.random((TASKS, WAYS * QUERIES, 28, 28, 1)), tf.float32),
        "query_labels": tf.constant(labels(QUERIES), tf.int32),
    }


def peak_bytes(model, data):
    model.compile(keras.optimizers.SGD(0.01))
    step = tf.function(model.train_step)
    start = time.time()
    step(data)  # trace, and let every lazily created buffer exist
    tf.config.experimental.reset_memory_stats("CPU:0")
    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(data)
    print(type(model).__name__, model.inner_steps, f"{time.time() - start:.1f}s", file=sys.stderr)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - held


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="also write the figures to this JSON file")
    arguments = parser.parse_args()
    data = batch()
    peaks = {"imaml": {}, "maml": {}}
    for steps in INNER_STEPS:
        keras.utils.set_random_seed(0)
        peaks["imaml"][str(steps)] = peak_bytes(
            IMAML(backbone(), ways=WAYS, inner_steps=steps, inner_learning_rate=0.1, cg_steps=5), data
        )
        keras.utils.set_random_seed(0)
        peaks["maml"][str(steps)] = peak_bytes(
            MAML(backbone(), ways=WAYS, inner_steps=steps, inner_learning_rate=0.1, first_order=False), data
        )
    record = {
        "peak_bytes": peaks,
        "what": "peak live tensor bytes (BFC CPU allocator) of one compiled train_step above the bytes held before it; "
                f"{TASKS} tasks of {WAYS}-way {SHOTS}-shot {QUERIES}-query 28x28 images, one conv block backbone, "
                "iMAML cg_steps=5 vs second-order MAML",
        "command": "python benchmarks/imaml_memory.py --output benchmarks/results/imaml_memory.json",
        "tensorflow": tf.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    if arguments.output:
        with open(arguments.output, "w") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
