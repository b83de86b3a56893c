"""Reptile's outer update (Nichol, Achiam & Schulman 2018, Algorithm 2, batched): one `train_step` with SGD(ε) moves
every adapted variable, backbone included, to θ + ε (mean_t φ_t − θ), where φ_t is θ after k plain SGD steps on
task t's support and query examples. φ_t is computed here by hand: the network's forward pass written with `tf.nn`
ops on the variables' values, differentiated with a tape (not the method's inner loop or `stateless_call`).

tests/test_method_rules.py checks the same rule on a classifier over an identity backbone; here a backbone with
weights is adapted too, on both of MAML's task paths, and ε = 1 (the paper's plain update: θ becomes mean_t φ_t).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.methods import Reptile

INNER_LEARNING_RATE, INNER_STEPS = 0.4, 3


def convolution_backbone():
    """4×4×1 images → 3×3 convolution, 2 filters, tanh → 8 features (MAML runs it with `stateless_call` per task)."""
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="tanh")(inputs)))


def dense_backbone():
    """4×4×1 images flattened → 3 tanh units (MAML runs it for all tasks at once on its grouped path)."""
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Dense(3, activation="tanh")(keras.layers.Flatten()(inputs)))


def hand_logits(kind, weights, images):
    """The network written out: [backbone kernel, backbone bias, classifier kernel, classifier bias]."""
    kernel, bias, head_kernel, head_bias = weights
    if kind == "convolution":
        features = tf.tanh(tf.nn.conv2d(images, kernel, strides=1, padding="VALID") + bias)
    else:
        features = tf.tanh(tf.reshape(images, [images.shape[0], -1]) @ kernel + bias)
    return tf.reshape(features, [images.shape[0], -1]) @ head_kernel + head_bias


def hand_adapted(kind, initial, images, labels):
    """θ after `INNER_STEPS` plain SGD steps on the mean cross-entropy of `images` (support and query)."""
    weights = [tf.constant(value, tf.float64) for value in initial]
    for _ in range(INNER_STEPS):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=hand_logits(kind, weights, images)))
        weights = [w - INNER_LEARNING_RATE * g for w, g in zip(weights, tape.gradient(loss, weights))]
    return [w.numpy() for w in weights]


def episodes(tasks=3, ways=2, shots=2, queries=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "support_images": tf.constant(rng.normal(size=(tasks, ways * shots, 4, 4, 1)), tf.float32),
        "support_labels": tf.constant(np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)), tf.int32),
        "query_images": tf.constant(rng.normal(size=(tasks, ways * queries, 4, 4, 1)), tf.float32),
        "query_labels": tf.constant(np.tile(np.arange(ways).repeat(queries)[::-1].copy(), (tasks, 1)), tf.int32),
    }


@pytest.mark.parametrize(("kind", "epsilon"), [("convolution", 1.0), ("dense", 0.3)])
def test_one_step_moves_every_adapted_variable_to_theta_plus_epsilon_times_mean_adapted_minus_theta(kind, epsilon):
    keras.utils.set_random_seed(7)
    backbone = convolution_backbone() if kind == "convolution" else dense_backbone()
    # One case per task path: the convolution runs per task under `stateless_call`, the dense one grouped (whether
    # grouped convolutions differentiate depends on the TensorFlow build and processor, so the path is set here).
    model = Reptile(backbone, ways=2, inner_steps=INNER_STEPS, inner_learning_rate=INNER_LEARNING_RATE,
                    first_order=True, task_batching=kind == "dense")
    assert model.batched == (kind == "dense")
    model.compile(keras.optimizers.SGD(epsilon))
    variables = model.adapted_variables
    assert len(variables) == 4  # backbone kernel and bias, classifier kernel and bias: everything is adapted
    rng = np.random.default_rng(8)
    for variable in variables:  # non-zero biases, so none starts at a point where its gradient vanishes
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype(np.float32))
    theta = [variable.numpy().astype(np.float64) for variable in variables]
    batch = episodes()
    adapted = []
    for task in range(3):
        images = np.concatenate([batch["support_images"][task], batch["query_images"][task]]).astype(np.float64)
        labels = np.concatenate([batch["support_labels"][task], batch["query_labels"][task]])
        adapted.append(hand_adapted(kind, theta, tf.constant(images), tf.constant(labels)))
    expected = [initial + epsilon * (np.mean([phi[index] for phi in adapted], axis=0) - initial)
                for index, initial in enumerate(theta)]
    for initial, target in zip(theta, expected):
        assert np.abs(target - initial).max() > 1e-2, "every variable must move visibly"
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)
    for variable, target in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), target, rtol=1e-5, atol=1e-6, err_msg=variable.path)
