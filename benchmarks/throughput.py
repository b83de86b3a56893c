"""Training throughput of mssl-tf against plain TensorFlow references measured in the same run.

    python benchmarks/throughput.py [--data-dir DIR] [--output benchmarks/results/throughput.json]

1. ProtoNet, 60-way 5-shot 5-query, Conv-4, one task per step: `ProtoNet.fit` on the `tf.data` episode
   pipeline versus a plain, minimal TF loop (numpy episode sampling, a `tf.function` step on raw variables).
2. Second-order MAML, 5-way 1-shot, 15 queries per class, meta-batch 32, Conv-4, 1 and 5 inner steps:
   `MAML` in its two modes (grouped convolutions over all tasks; `tf.map_fn` over tasks) versus a naive Keras 3
   reference: a plain Keras Conv-4 classifier whose `train_step` unrolls the 32 tasks in one `tf.function`,
   each adapted with `stateless_call`. Compile (first-step) times included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.data import EpisodeSpec, episode_dataset, load_split  # noqa: E402
from mssl_tf.results import current_commit  # noqa: E402


def timed_fit(model, dataset, warmup_steps, steps):
    """(first-call seconds incl. tracing, seconds per step over `steps` more)."""
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=warmup_steps, epochs=1, verbose=0)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return warmup, (time.perf_counter() - start) / steps


class PlainProtoNet:
    """ProtoNet in plain TF: raw variables, hand-written Conv-4, numpy episode sampling, one `tf.function` step."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.variables = []
        channels = 1
        for _ in range(4):
            scale = np.sqrt(2.0 / (9 * channels))
            self.variables += [
                tf.Variable(rng.normal(0, scale, (3, 3, channels, 64)).astype(np.float32)),
                tf.Variable(np.zeros(64, np.float32)),
                tf.Variable(np.ones(64, np.float32)),
                tf.Variable(np.zeros(64, np.float32)),
            ]
            channels = 64
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.optimizer.build(self.variables)

    def embed(self, images):
        x = images
        for block in range(4):
            kernel, bias, gamma, beta = self.variables[4 * block: 4 * block + 4]
            x = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
            mean, variance = tf.nn.moments(x, [0, 1, 2])
            x = tf.nn.relu(tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-5))
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return tf.reshape(x, [tf.shape(x)[0], -1])

    @tf.function
    def step(self, support, query, ways, shots, queries):
        with tf.GradientTape() as tape:
            embeddings = self.embed(tf.concat([support, query], 0))
            prototypes = tf.reduce_mean(tf.reshape(embeddings[: ways * shots], [ways, shots, -1]), 1)
            distances = tf.reduce_sum(tf.square(embeddings[ways * shots:, None] - prototypes[None]), -1)
            labels = tf.repeat(tf.range(ways), queries)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, -distances))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.variables), self.variables))
        return loss


def plain_protonet_seconds_per_step(images, spec, steps, seed=0):
    rng = np.random.default_rng(seed)
    model = PlainProtoNet(seed)

    def sample():
        classes = rng.choice(len(images), spec.ways, replace=False)
        picks = np.stack([rng.permutation(images.shape[1])[: spec.shots + spec.queries] for _ in classes])
        episode = images[classes[:, None], picks].astype(np.float32)[..., None] / 255.0
        support = episode[:, : spec.shots].reshape(-1, 28, 28, 1)
        query = episode[:, spec.shots:].reshape(-1, 28, 28, 1)
        return support, query

    start = time.perf_counter()
    model.step(*sample(), spec.ways, spec.shots, spec.queries)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        model.step(*sample(), spec.ways, spec.shots, spec.queries)
    return warmup, (time.perf_counter() - start) / steps


def protonet_benchmark(images, steps):
    spec = EpisodeSpec(60, 5, 5)
    images_per_episode = spec.ways * (spec.shots + spec.queries)
    keras.utils.set_random_seed(0)
    model = mssl_tf.build_method("protonet", mssl_tf.conv4())
    model.compile(keras.optimizers.Adam(1e-3))
    ours_warmup, ours = timed_fit(model, episode_dataset(images, spec, 1, seed=0), 3, steps)
    plain_warmup, plain = plain_protonet_seconds_per_step(images, spec, steps)
    return {
        "task": "ProtoNet 60-way 5-shot 5-query, Conv-4, 1 task per step, Adam",
        "steps_timed": steps,
        "mssl_tf": {"episodes_per_second": round(1 / ours, 3), "images_per_second": round(images_per_episode / ours, 1),
                    "first_steps_seconds": round(ours_warmup, 1)},
        "plain_tf": {"episodes_per_second": round(1 / plain, 3),
                     "images_per_second": round(images_per_episode / plain, 1),
                     "first_step_seconds": round(plain_warmup, 1)},
        "speedup_over_plain_tf": round(plain / ours, 3),
    }


def plain_keras_conv4_classifier(ways):
    """Conv-4 as a Keras user writes it: conv with bias, Keras batch norm, ReLU, max-pool; linear classifier."""
    images = keras.Input((28, 28, 1))
    x = images
    for _ in range(4):
        x = keras.layers.Conv2D(64, 3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    return keras.Model(images, keras.layers.Dense(ways)(keras.layers.Flatten()(x)))


class NaiveKerasMAML(keras.Model):
    """Reference: second-order MAML unrolling every task of the meta-batch inside one `train_step`."""

    def __init__(self, ways, inner_steps, inner_learning_rate):
        super().__init__()
        self.network = plain_keras_conv4_classifier(ways)
        self.inner_steps, self.inner_learning_rate = inner_steps, inner_learning_rate
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, images):
        return self.network(images)

    def task_loss(self, support_images, support_labels, query_images, query_labels):
        fast = [variable.value for variable in self.network.trainable_variables]
        frozen = [variable.value for variable in self.network.non_trainable_variables]
        for _ in range(self.inner_steps):
            with tf.GradientTape() as tape:
                tape.watch(fast)
                logits, _ = self.network.stateless_call(fast, frozen, support_images, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(support_labels, logits))
            fast = [w - self.inner_learning_rate * g for w, g in zip(fast, tape.gradient(loss, fast))]
        logits, _ = self.network.stateless_call(fast, frozen, query_images, training=True)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(query_labels, logits))

    def train_step(self, data):
        keys = ("support_images", "support_labels", "query_images", "query_labels")
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean([
                self.task_loss(*(data[key][task] for key in keys)) for task in range(data["support_images"].shape[0])
            ])
        variables = self.network.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def maml_benchmark(images, inner_steps, steps):
    spec = EpisodeSpec(5, 1, 15)
    dataset = episode_dataset(images, spec, 32, seed=0)
    result = {"task": f"second-order MAML 5-way 1-shot, 15 queries/class, meta-batch 32, Conv-4, {inner_steps} inner "
                      "step(s)", "inner_steps": inner_steps, "steps_timed": steps}
    variants = {
        "mssl_tf_grouped": lambda: mssl_tf.build_method(
            "maml", mssl_tf.conv4(), ways=5, inner_steps=inner_steps, inner_learning_rate=0.4, task_batching=True),
        "mssl_tf_map_fn": lambda: mssl_tf.build_method(
            "maml", mssl_tf.conv4(), ways=5, inner_steps=inner_steps, inner_learning_rate=0.4, task_batching=False),
        "naive_keras_unrolled": lambda: NaiveKerasMAML(5, inner_steps, 0.4),
    }
    for label, build in variants.items():
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(keras.optimizers.Adam(1e-3))
        warmup, seconds = timed_fit(model, dataset, 1, steps)
        result[label] = {"seconds_per_meta_iteration": round(seconds, 3), "first_step_seconds": round(warmup, 1)}
        print(label, result[label], flush=True)
    naive = result["naive_keras_unrolled"]["seconds_per_meta_iteration"]
    for label in ("mssl_tf_grouped", "mssl_tf_map_fn"):
        result[f"{label}_speedup_over_naive"] = round(naive / result[label]["seconds_per_meta_iteration"], 3)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--protonet-steps", type=int, default=60)
    parser.add_argument("--maml-steps", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/throughput.json")
    args = parser.parse_args(argv)
    images = load_split("train", args.data_dir)
    record = {
        "benchmark": "training throughput",
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": current_commit(Path(__file__).parent),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "protonet": protonet_benchmark(images, args.protonet_steps),
    }
    print(json.dumps(record["protonet"], indent=2), flush=True)
    record["maml"] = []
    for inner_steps in (1, 5):
        record["maml"].append(maml_benchmark(images, inner_steps, args.maml_steps))
        print(json.dumps(record["maml"][-1], indent=2), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
