"""iMAML (Rajeswaran et al. 2019): the implicit meta-gradient against the exact one, conjugate gradient against a
direct solve, Hessian-vector products through Conv-4 against finite differences, memory flat in the inner steps
(measured), a two-step fit on Omniglot-shaped episodes, and a `.keras` round trip.

The linear problems use an identity (or flattening) backbone and a 3 → 2 classifier, `[kernel; bias]` as one 4×2
matrix; the numpy references redo the paper's equations without calling the method's helpers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.methods import IMAML
from mssl_tf.methods.episodic import task_cross_entropy
from mssl_tf.methods.imaml import conjugate_gradient
from mssl_tf.training import load_trained
from tests.conftest import central_differences, labelled_classes

REPOSITORY = Path(__file__).parents[1]
RATE, LAMBDA = 0.3, 2.0  # λ ≠ 1, so H and H/λ differ; each inner step contracts the error at least 2.5x


# === Numpy references ===
def softmax(logits):
    exponentials = np.exp(logits - logits.max(-1, keepdims=True))
    return exponentials / exponentials.sum(-1, keepdims=True)


def with_bias(features):
    return np.concatenate([features, np.ones((len(features), 1))], axis=1)


def cross_entropy(weights, features, labels):
    probabilities = softmax(with_bias(features) @ weights)
    return -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))


def cross_entropy_gradient(weights, features, labels):
    inputs = with_bias(features)
    return inputs.T @ (softmax(inputs @ weights) - np.eye(weights.shape[1])[labels]) / len(inputs)


def cross_entropy_hessian(weights, features):
    """The Hessian of the mean softmax cross-entropy w.r.t. the flattened `weights` (row-major), as a matrix."""
    inputs = with_bias(features)
    probabilities = softmax(inputs @ weights)
    columns = []
    for index in range(weights.size):
        direction = np.zeros(weights.size)
        direction[index] = 1.0
        projected = inputs @ direction.reshape(weights.shape)
        inner = probabilities * projected - probabilities * np.sum(probabilities * projected, axis=1, keepdims=True)
        columns.append((inputs.T @ inner / len(inputs)).ravel())
    return np.stack(columns, axis=1)


def proximal_descent(theta, features, labels, steps, rate=RATE, regularization=LAMBDA):
    """`steps` gradient steps on CE(phi) + (lambda/2)||phi - theta||^2 from phi = theta."""
    phi = theta
    for _ in range(steps):
        phi = phi - rate * (cross_entropy_gradient(phi, features, labels) + regularization * (phi - theta))
    return phi


def classifier_matrix(model):
    return np.concatenate([model.classifier.kernel.numpy(), model.classifier.bias.numpy()[None]], 0).astype(np.float64)


def as_matrix(kernel_and_bias):
    kernel, bias = (np.asarray(value, np.float64) for value in kernel_and_bias)
    return np.concatenate([kernel, bias[None]], axis=0)


# === Tiny problems ===
def linear_imaml(grouped=False, seed=0, **options):
    """Identity features of 3-vectors (`stateless_call` per task), or `grouped`: 1×3×1 images flattened (the
    grouped-convolution path, which takes image-shaped inputs)."""
    inputs = keras.Input((1, 3, 1) if grouped else (3,))
    layer = keras.layers.Flatten() if grouped else keras.layers.Identity()
    model = IMAML(keras.Model(inputs, layer(inputs)), ways=2, inner_learning_rate=RATE, regularization=LAMBDA,
                  **options)
    rng = np.random.default_rng(seed)
    model.classifier.kernel.assign(rng.normal(size=(3, 2)).astype(np.float32))
    model.classifier.bias.assign(np.array([0.3, -0.2], np.float32))
    return model


def linear_batch(tasks=2, seed=0, shape=(3,)):
    rng = np.random.default_rng(seed)
    return {
        "support_images": tf.constant(rng.normal(size=(tasks, 4, 3)).reshape(tasks, 4, *shape), tf.float32),
        "support_labels": tf.constant([[0, 1, 0, 1]] * tasks, tf.int32),
        "query_images": tf.constant(rng.normal(size=(tasks, 6, 3)).reshape(tasks, 6, *shape), tf.float32),
        "query_labels": tf.constant([[1, 0, 1, 1, 0, 0]] * tasks, tf.int32),
    }


def task_arrays(batch, task):
    """Task `task` as float64 features `[n, 3]` and int64 labels."""
    return tuple(batch[key][task].numpy().reshape(-1, 3).astype(np.float64) if "images" in key
                 else batch[key][task].numpy().astype(np.int64)
                 for key in ("support_images", "support_labels", "query_images", "query_labels"))


# === Conjugate gradient ===
def test_conjugate_gradient_solves_each_task_system_exactly_in_dimension_steps():
    rng = np.random.default_rng(0)
    matrices = [np.eye(5) + (lambda m: m @ m.T)(rng.normal(size=(5, 5))) for _ in range(2)]
    right = rng.normal(size=(2, 5))
    expected = np.stack([np.linalg.solve(matrix, b) for matrix, b in zip(matrices, right)])

    def apply(vectors):
        return [tf.einsum("tij,tj->ti", tf.constant(np.stack(matrices)), vectors[0])]

    solved = conjugate_gradient(apply, [tf.constant(right)], steps=5, task_rank=1)[0].numpy()
    np.testing.assert_allclose(solved, expected, rtol=1e-7, atol=1e-9)
    early = conjugate_gradient(apply, [tf.constant(right)], steps=2, task_rank=1)[0].numpy()
    assert np.abs(early - expected).max() > 1e-3, "two steps must not already be exact here"
    single = conjugate_gradient(lambda v: [tf.linalg.matvec(tf.constant(matrices[0]), v[0])],
                                [tf.constant(right[0])], steps=5)[0].numpy()
    np.testing.assert_allclose(single, expected[0], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("grouped", [False, True], ids=["stateless_call", "grouped"])
def test_cg_meta_gradient_equals_a_direct_solve_of_the_proximal_system(grouped):
    """(I + H/λ) x = ∇L_query(φ), H the support Hessian at φ = θ after k proximal steps; 8 unknowns, 8 CG steps."""
    steps = 3
    model = linear_imaml(grouped, inner_steps=steps, cg_steps=8)
    assert model.batched == grouped
    batch = linear_batch(shape=(1, 3, 1) if grouped else (3,))
    theta = classifier_matrix(model)
    expected = []
    for task in range(2):
        support, support_labels, query, query_labels = task_arrays(batch, task)
        phi = proximal_descent(theta, support, support_labels, steps)
        query_gradient = cross_entropy_gradient(phi, query, query_labels)
        system = np.eye(8) + cross_entropy_hessian(phi, support) / LAMBDA
        expected.append(np.linalg.solve(system, query_gradient.ravel()).reshape(4, 2))
        assert np.abs(expected[-1] - query_gradient).max() > 0.02, "the Hessian term must be visible"
    measured, logits = model.meta_gradients(batch)
    np.testing.assert_allclose(as_matrix(measured), np.mean(expected, axis=0), rtol=1e-4, atol=1e-6)
    for task in range(2):
        support, support_labels, query, _ = task_arrays(batch, task)
        phi = proximal_descent(theta, support, support_labels, steps)
        np.testing.assert_allclose(logits[task], with_bias(query) @ phi, rtol=1e-5, atol=1e-5)


# === The implicit meta-gradient is the exact one when the inner problem is solved ===
def converged_meta_loss(theta, batch):
    """mean_t L_query(φ*_t(θ)), φ* the proximal problem's minimizer (gradient descent run to machine precision)."""
    losses = []
    for task in range(batch["support_images"].shape[0]):
        support, support_labels, query, query_labels = task_arrays(batch, task)
        phi = proximal_descent(theta, support, support_labels, 100)
        losses.append(cross_entropy(phi, query, query_labels))
    return np.mean(losses)


def test_implicit_meta_gradient_matches_the_exact_one_at_convergence():
    """Exact: central finite differences (float64) of the meta-loss through the converged inner solution."""
    model = linear_imaml(grouped=True, inner_steps=40, cg_steps=8)
    batch = linear_batch(seed=3, shape=(1, 3, 1))
    theta = classifier_matrix(model)
    exact, step = np.zeros_like(theta), 1e-6
    for index in np.ndindex(theta.shape):
        shift = np.zeros_like(theta)
        shift[index] = step
        exact[index] = (converged_meta_loss(theta + shift, batch) - converged_meta_loss(theta - shift, batch)) / (
            2 * step)
    measured = as_matrix(model.meta_gradients(batch)[0])
    np.testing.assert_allclose(measured, exact, rtol=1e-3, atol=1e-5)
    # What iMAML without the implicit correction would hand the optimizer (first-order: ∇L_query(φ)) is visibly off.
    first_order = np.mean([cross_entropy_gradient(proximal_descent(theta, s, sl, 100), q, ql)
                           for s, sl, q, ql in (task_arrays(batch, task) for task in range(2))], axis=0)
    assert np.abs(first_order - exact).max() > 0.02


@pytest.mark.slow  # 28 evaluations of a 30-step float64 inner loop, traced: about 20 s on 2 busy cores
def test_dense_network_meta_gradient_matches_finite_differences_through_the_converged_inner_loop(float64):
    """A tanh hidden layer (non-convex inner problem, made locally convex by λ): the model's own proximal inner loop,
    run to convergence, differentiated by central finite differences (float64), against the implicit gradient."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((1, 3, 1))
    features = keras.layers.Dense(2, activation="tanh")(keras.layers.Flatten()(inputs))
    model = IMAML(keras.Model(inputs, features), ways=2, inner_steps=30, inner_learning_rate=0.3, regularization=2.0,
                  cg_steps=14)  # 14 parameters: CG is exact
    batch = linear_batch(seed=6, shape=(1, 3, 1))
    batch = {key: tf.cast(value, tf.float64) if "images" in key else value for key, value in batch.items()}
    meta_loss = tf.function(lambda: tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0]))
    measured = np.concatenate([g.numpy().ravel() for g in model.meta_gradients(batch)[0]])
    numeric = central_differences(meta_loss, model.adapted_variables, 1e-6)
    np.testing.assert_allclose(measured, numeric, rtol=1e-5, atol=1e-8)


# === Hessian-vector products through Conv-4 (fused batch norm) ===
def test_hessian_vector_products_through_conv4_match_finite_differences_of_the_gradient():
    """Conv-4 is what iMAML trains (float32, fused batch norm on batch statistics): H v by double backward equals
    (∇L(φ + εv) − ∇L(φ − εv)) / 2ε to within float32 finite-difference error (0.5% measured; against a float64
    difference quotient, 7e-7).

    Keras' own (unfused) BatchNormalization fails this check (its Hessian is ~29% off here: its batch moments stop the
    gradient through the mean), which is why the backbone is checked, not assumed."""
    keras.utils.set_random_seed(2)
    model = IMAML(mssl_tf.conv4(input_shape=(16, 16, 1), filters=4), ways=3, task_batching=False)
    rng = np.random.default_rng(1)
    images = tf.constant(rng.random((6, 16, 16, 1)), tf.float32)
    labels = tf.constant([0, 1, 2, 0, 1, 2])
    weights = [variable.value for variable in model.adapted_variables]
    vectors = [tf.constant(rng.normal(size=w.shape), tf.float32) for w in weights]
    paths = [variable.path for variable in model.adapted_variables]

    def gradient(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = task_cross_entropy(labels, model.stateless_logits(dict(zip(paths, values)), images))
        return np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, values)]).astype(np.float64)

    measured = np.concatenate([
        hv.numpy().ravel() for hv in model.hessian_vector_product(weights, images, labels, model.stateless_logits)(vectors)
    ]).astype(np.float64)
    epsilon = 1e-5  # ReLU and max-pool kinks: beyond ~1e-4 the difference quotient is not the local curvature
    numeric = (gradient([w + epsilon * v for w, v in zip(weights, vectors)])
               - gradient([w - epsilon * v for w, v in zip(weights, vectors)])) / (2 * epsilon)
    assert np.linalg.norm(numeric) > 0.1, "the curvature along v must be visible"
    assert np.linalg.norm(measured - numeric) < 0.02 * np.linalg.norm(numeric)  # measured here: 0.5%


# === Evaluation ===
def test_evaluation_adapts_with_the_proximal_inner_loop_and_ignores_query_labels():
    model = linear_imaml(inner_steps=1, evaluation_inner_steps=4)
    batch = linear_batch()
    theta = classifier_matrix(model)
    _, logits = model.meta_batch_learn(batch, training=False)
    for task in range(2):
        support, support_labels, query, _ = task_arrays(batch, task)
        phi = proximal_descent(theta, support, support_labels, 4)
        np.testing.assert_allclose(logits[task], with_bias(query) @ phi, rtol=1e-5, atol=1e-5)
        plain = proximal_descent(theta, support, support_labels, 4, regularization=0.0)
        assert np.abs(with_bias(query) @ plain - with_bias(query) @ phi).max() > 0.01, "λ must matter"
    relabelled = {**batch, "query_labels": 1 - batch["query_labels"]}
    np.testing.assert_array_equal(model.meta_batch_learn(relabelled, training=False)[1], logits)
    assert model.few_shot_ways == 2


def test_grouped_and_per_task_paths_give_the_same_meta_gradient():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((1, 3, 1))
    backbone = keras.Model(inputs, keras.layers.Dense(4, activation="relu")(keras.layers.Flatten()(inputs)))
    batched = IMAML(backbone, ways=2, inner_steps=3, cg_steps=3)
    per_task = IMAML(keras.models.clone_model(backbone), ways=2, inner_steps=3, cg_steps=3, task_batching=False)
    assert batched.batched and not per_task.batched
    per_task.set_weights(batched.get_weights())
    batch = linear_batch(tasks=3, seed=5, shape=(1, 3, 1))
    (first, first_logits), (second, second_logits) = batched.meta_gradients(batch), per_task.meta_gradients(batch)
    np.testing.assert_allclose(first_logits, second_logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# === Memory does not grow with the inner steps ===
@pytest.mark.slow  # a fresh process traces six train steps (about 3 minutes on 2 busy cores)
def test_memory_stays_flat_in_inner_steps_while_second_order_maml_grows():
    """Peak bytes of TensorFlow's CPU allocator (BFC, `get_memory_info`) during one compiled `train_step`, measured in
    a fresh process by benchmarks/imaml_memory.py (2 tasks, 5-way 5-shot 5-query 28×28, one conv block). Recorded in
    benchmarks/results/imaml_memory.json (TF 2.20, 2 busy cores), MB at 1 / 5 / 20 inner steps: iMAML 27.7 / 28.3 /
    28.3, second-order MAML 35.4 / 98.9 / 331.4.
    """
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(REPOSITORY / "benchmarks" / "imaml_memory.py")], capture_output=True,
                            text=True, env=environment, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"]
    imaml, maml = peaks["imaml"], peaks["maml"]
    assert max(imaml.values()) < 1.25 * min(imaml.values()), peaks
    assert maml["20"] > 3 * maml["1"] and maml["20"] > 3 * imaml["20"], peaks


# === Fit and serialization ===
def test_two_step_fit_on_omniglot_shaped_episodes_applies_the_implicit_gradient():
    keras.utils.set_random_seed(6)
    model = IMAML(mssl_tf.conv4(filters=8, blocks=2), ways=5, inner_steps=2, cg_steps=2, inner_learning_rate=0.1)
    rate = 0.05
    model.compile(keras.optimizers.SGD(rate))
    episodes = episode_dataset(labelled_classes().astype(np.uint8), EpisodeSpec(5, 1, 2), meta_batch=2, seed=3)
    batch = next(iter(episodes))
    before = [variable.numpy() for variable in model.adapted_variables]
    gradients, _ = model.meta_gradients(batch)
    assert all(np.isfinite(g.numpy()).all() for g in gradients) and max(np.abs(g).max() for g in gradients) > 1e-4
    model.fit(tf.data.Dataset.from_tensors(batch), steps_per_epoch=1, epochs=1, verbose=0)
    for variable, initial, gradient in zip(model.adapted_variables, before, gradients):
        np.testing.assert_allclose(variable.numpy(), initial - rate * gradient.numpy(), rtol=1e-4, atol=1e-6)
    history = model.fit(episodes, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_keras_round_trip_keeps_the_configuration_and_the_adaptation(tmp_path):
    model = linear_imaml(inner_steps=3, evaluation_inner_steps=5, cg_steps=4)
    model.regularization = 0.7  # a non-default λ must be saved (it changes evaluation)
    batch = linear_batch()
    path = tmp_path / "imaml.keras"
    model.save(path)
    restored, _ = load_trained(path)
    assert type(restored) is IMAML
    config = restored.get_config()
    assert (config["regularization"], config["cg_steps"], config["evaluation_inner_steps"]) == (0.7, 4, 5)
    assert "first_order" not in config and "adapt" not in config
    np.testing.assert_allclose(restored.meta_batch_learn(batch, training=False)[1],
                               model.meta_batch_learn(batch, training=False)[1], rtol=1e-6, atol=1e-6)
