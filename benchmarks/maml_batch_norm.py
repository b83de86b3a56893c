"""Second-order MAML meta-iterations with TensorFlow's fused batch-norm op (its second derivative built by TensorFlow)
against mssl-tf's `fused_batch_norm` (same kernels, second derivative closed-form), alternating in one run.

    python benchmarks/maml_batch_norm.py [--inner-steps 1,5] [--meta-batch 32] [--rounds 5] [--output FILE]

5-way 1-shot, 15 queries per class, Conv-4, grouped-convolution task batching, Adam, random 28x28 images (the
timing does not depend on the pixels). Per variant: the first step (tracing and compiling included) and the median
wall and process-CPU seconds per meta-iteration; the CPU seconds are steadier on a shared machine.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.backbones import fused_batch_norm as batch_norm_module  # noqa: E402
from mssl_tf.data import EpisodeSpec, episode_dataset  # noqa: E402
from mssl_tf.ops import task_batched  # noqa: E402


def tensorflow_fused_batch_norm(inputs, gamma, beta, epsilon):
    return tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta), epsilon=epsilon, is_training=True)


VARIANTS = {"tensorflow_fused": tensorflow_fused_batch_norm, "mssl_tf_fused": batch_norm_module.fused_batch_norm}


def timed_step(model, dataset):
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)
    return time.perf_counter() - start_wall, time.process_time() - start_cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner-steps", default="1,5")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/maml_batch_norm.json")
    args = parser.parse_args(argv)
    images = np.random.default_rng(0).integers(0, 255, (64, 20, 28, 28), dtype=np.uint8)
    dataset = episode_dataset(images, EpisodeSpec(5, 1, 15), args.meta_batch, seed=0)
    models, first = {}, {}
    for steps in (int(steps) for steps in args.inner_steps.split(",")):
        for name, function in VARIANTS.items():
            task_batched.fused_batch_norm = function  # read when the train step is traced, i.e. in the first fit
            keras.utils.set_random_seed(0)
            model = mssl_tf.build_method("maml", mssl_tf.conv4(), ways=5, inner_steps=steps, inner_learning_rate=0.4)
            model.compile(keras.optimizers.Adam(1e-3))
            first[steps, name] = timed_step(model, dataset)
            models[steps, name] = model
    task_batched.fused_batch_norm = batch_norm_module.fused_batch_norm
    wall, cpu = {key: [] for key in models}, {key: [] for key in models}
    for _ in range(args.rounds):
        for key, model in models.items():
            seconds, cpu_seconds = timed_step(model, dataset)
            wall[key].append(seconds)
            cpu[key].append(cpu_seconds)
    record = {"command": "python benchmarks/maml_batch_norm.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "task": f"second-order MAML 5-way 1-shot, 15 queries/class, meta-batch {args.meta_batch}, Conv-4",
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
              "load_average": [round(load, 2) for load in os.getloadavg()], "rounds": args.rounds, "results": []}
    for steps in sorted({steps for steps, _ in models}):
        row = {"inner_steps": steps}
        for name in VARIANTS:
            key = (steps, name)
            row[name] = {"first_step_seconds": round(first[key][0], 1),
                         "first_step_cpu_seconds": round(first[key][1], 1),
                         "seconds_per_meta_iteration": round(statistics.median(wall[key]), 3),
                         "cpu_seconds_per_meta_iteration": round(statistics.median(cpu[key]), 3)}
        old, new = row["tensorflow_fused"], row["mssl_tf_fused"]
        row["speedup"] = {
            "wall": round(old["seconds_per_meta_iteration"] / new["seconds_per_meta_iteration"], 3),
            "cpu": round(old["cpu_seconds_per_meta_iteration"] / new["cpu_seconds_per_meta_iteration"], 3)}
        record["results"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.output, "w") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
