"""Micro-benchmark: Keras-style batch norm (moments + normalize) vs the fused kernel, with ReLU, on a tensor the
size of Conv-4's first block in a MAML query pass ([75, 28, 28, 2048]).

    python benchmarks/batch_norm_micro.py [--output benchmarks/results/batch_norm_micro.json]

Seconds for forward, forward+backward, and a second-order gradient (as in MAML's inner loop).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402


def seconds(function, repeats=3):
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return round((time.perf_counter() - start) / repeats, 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="benchmarks/results/batch_norm_micro.json")
    args = parser.parse_args(argv)
    x = tf.Variable(tf.random.normal([75, 28, 28, 2048]))
    gamma, beta = tf.Variable(tf.ones([2048])), tf.Variable(tf.zeros([2048]))

    def unfused(inputs):
        mean, variance = tf.nn.moments(inputs, [0, 1, 2])
        return tf.nn.relu(tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, 1e-5))

    def fused(inputs):
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=1e-5, is_training=True)
        return tf.nn.relu(outputs)

    record = {"command": "python benchmarks/batch_norm_micro.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "shape": [75, 28, 28, 2048]}
    for name, norm in (("keras_style", unfused), ("fused", fused)):
        forward = tf.function(lambda: norm(x))

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
                gradient_norm = tf.reduce_sum(inner.gradient(loss, gamma) ** 2)
            return outer.gradient(gradient_norm, [x, gamma])

        record[name] = {"forward": seconds(forward), "forward_backward": seconds(backward),
                        "second_order": seconds(second_order)}
        print(name, record[name], flush=True)
    with open(args.output, "w") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
