"""Micro-benchmark: Keras-style batch norm (moments + normalize), TensorFlow's fused op, and mssl-tf's
`fused_batch_norm` (the fused kernels, its second derivative closed-form), with ReLU, on a tensor the size of
Conv-4's first block in a MAML query pass ([75, 28, 28, 2048]; `--shape 5,28,28,2048` for a 1-shot support pass).

    python benchmarks/batch_norm_micro.py [--shape N,H,W,C] [--rounds 3]
        [--output benchmarks/results/batch_norm_micro.json]

Median seconds for forward, forward+backward, and a second-order gradient (as in MAML's inner loop: the inner
gradient with respect to the inputs and gamma, differentiated again), the variants alternating round by round;
also process CPU seconds, steadier than wall time on a shared machine.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from mssl_tf.backbones.fused_batch_norm import fused_batch_norm  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="75,28,28,2048")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/batch_norm_micro.json")
    args = parser.parse_args(argv)
    shape = [int(size) for size in args.shape.split(",")]
    x = tf.Variable(tf.random.normal(shape))
    gamma, beta = tf.Variable(tf.ones(shape[-1:])), tf.Variable(tf.zeros(shape[-1:]))
    direction = tf.random.normal(shape)

    def keras_style(inputs):
        mean, variance = tf.nn.moments(inputs, [0, 1, 2])
        return tf.nn.relu(tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, 1e-5))

    def tensorflow_fused(inputs):
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=1e-5, is_training=True)
        return tf.nn.relu(outputs)

    def mssl_tf_fused(inputs):
        return tf.nn.relu(fused_batch_norm(inputs, gamma, beta, 1e-5)[0])

    def passes(norm):
        @tf.function
        def backward():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(norm(x) ** 2)
            return tape.gradient(loss, [x, gamma, beta])

        @tf.function
        def second_order():
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = tf.reduce_sum(norm(x) ** 2)
                gradient_x, gradient_gamma = inner.gradient(loss, [x, gamma])
                directional = tf.reduce_sum(gradient_x * direction) + tf.reduce_sum(gradient_gamma**2)
            return outer.gradient(directional, [x, gamma])

        return {"forward": tf.function(lambda: norm(x)), "forward_backward": backward, "second_order": second_order}

    variants = {"keras_style": passes(keras_style), "fused": passes(tensorflow_fused),
                "mssl_tf_fused": passes(mssl_tf_fused)}
    wall = {(name, kind): [] for name, functions in variants.items() for kind in functions}
    cpu = {key: [] for key in wall}
    for functions in variants.values():
        for function in functions.values():
            function()  # trace and warm up
    for _ in range(args.rounds):
        for name, functions in variants.items():
            for kind, function in functions.items():
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                function()
                wall[name, kind].append(time.perf_counter() - start_wall)
                cpu[name, kind].append(time.process_time() - start_cpu)
    record = {"command": "python benchmarks/batch_norm_micro.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "shape": shape, "rounds": args.rounds, "load_average": [round(load, 2) for load in os.getloadavg()]}
    for name, functions in variants.items():
        record[name] = {kind: round(statistics.median(wall[name, kind]), 3) for kind in functions}
        record[name]["cpu_seconds"] = {kind: round(statistics.median(cpu[name, kind]), 3) for kind in functions}
    record["second_order_speedup_over_fused"] = {
        "wall": round(record["fused"]["second_order"] / record["mssl_tf_fused"]["second_order"], 3),
        "cpu": round(record["fused"]["cpu_seconds"]["second_order"]
                     / record["mssl_tf_fused"]["cpu_seconds"]["second_order"], 3)}
    print(json.dumps(record, indent=2), flush=True)
    with open(args.output, "w") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
