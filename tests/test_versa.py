"""VERSA (Gordon et al., ICLR 2019): generated class posteriors, the averaged predictive and ML-PIP's loss against
numpy; reproducible noise (evaluation fixed, training per step and task); it learns from the support set.

Its 2-replica check is `versa` in tests/workers/mirrored_step.py (with a control whose training noise ignores the
replica), its served = evaluated check is in tests/test_served_adaptation.py, its round trip in tests/test_registry.py.
"""

import keras
import numpy as np
import tensorflow as tf

import mssl_tf
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.evaluation import evaluate
from mssl_tf.methods import Versa
from mssl_tf.methods.versa import class_posteriors
from tests.test_method_rules import identity_backbone, softmax, task_arrays, tiny_batch
from tests.test_registry import easy_classes

SAMPLES = 7


def elu(values):
    return np.where(values > 0, values, np.exp(np.minimum(values, 0)) - 1)


def set_amortization(model, seed=3, scale=0.6):
    """Seeded, non-trivial amortization weights (biases too); returns them as float64 `(kernel, bias)` pairs."""
    rng = np.random.default_rng(seed)
    layers = []
    for layer in model.amortization.layers:
        kernel = rng.normal(scale=scale, size=layer.kernel.shape)
        bias = rng.normal(scale=scale, size=layer.bias.shape)
        layer.kernel.assign(kernel.astype(np.float32))
        layer.bias.assign(bias.astype(np.float32))
        layers.append((kernel, bias))
    return layers


def numpy_posterior(layers, support, support_labels, ways):
    """Class means of the support features → ELU MLP → (weight means, weight log-variances, bias mean, bias
    log-variance), from the paper's equations."""
    hidden = np.stack([support[support_labels == label].mean(axis=0) for label in range(ways)])
    for kernel, bias in layers[:-1]:
        hidden = elu(hidden @ kernel + bias)
    outputs = hidden @ layers[-1][0] + layers[-1][1]
    dimension = support.shape[1]
    return outputs[:, :dimension], outputs[:, dimension:2 * dimension], outputs[:, -2], outputs[:, -1]


def numpy_log_predictive(posterior, query, noise):
    """log 1/L Σ_l softmax(μ + sqrt(var)·ε_l), logits μ = h·μ_w + μ_b, var = h²·σ²_w + σ²_b; noise `[q, ways, L]`."""
    weight_means, weight_log_variances, bias_means, bias_log_variances = posterior
    means = query @ weight_means.T + bias_means
    variances = query**2 @ np.exp(weight_log_variances).T + np.exp(bias_log_variances)
    logits = means[..., None] + np.sqrt(variances)[..., None] * noise
    probabilities = softmax(np.moveaxis(logits, -1, 0))  # [L, q, ways]
    return np.log(probabilities.mean(axis=0)), np.log(probabilities).mean(axis=0)


def test_generated_posteriors_and_averaged_predictive_match_the_equations():
    ways, queries = 3, 2
    model = Versa(identity_backbone(), hidden_units=(5,), samples=4, evaluation_samples=SAMPLES, seed=11)
    layers = set_amortization(model)
    batch = tiny_batch(tasks=2, ways=ways, shots=2, queries=queries, seed=7)
    # Evaluation noise: one documented draw, the same for every task.
    noise = tf.random.stateless_normal([ways * queries, ways, SAMPLES], seed=[11, 0]).numpy().astype(np.float64)
    losses, logits = model.meta_batch_learn(batch, training=False)
    posteriors = class_posteriors(model.backbone(batch["support_images"][0])[tf.newaxis], batch["support_labels"][:1],
                                  model.amortization)
    for task in range(2):
        support, support_labels, query, query_labels = task_arrays(batch, task)
        posterior = numpy_posterior(layers, support, support_labels, ways)
        if task == 0:
            for generated, expected in zip(posteriors, posterior):
                np.testing.assert_allclose(generated[0], expected, rtol=1e-5, atol=1e-5)
        expected, mean_of_logs = numpy_log_predictive(posterior, query, noise)
        assert np.abs(expected - mean_of_logs).max() > 0.05, "the samples must spread for log-mean-exp to matter"
        np.testing.assert_allclose(logits[task], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(losses[task], -expected[np.arange(len(query)), query_labels].mean(), rtol=1e-5)
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, rtol=1e-5)  # softmax of the logits is the predictive


def test_evaluation_is_deterministic_and_training_draws_per_step_and_task():
    model = Versa(identity_backbone(), hidden_units=(5,), seed=2)
    set_amortization(model)
    model.compile(keras.optimizers.SGD(0.0))
    batch = tiny_batch(tasks=2, ways=2, shots=2, queries=3, seed=1)
    same = {key: tf.concat([value[:1], value[:1]], 0) for key, value in batch.items()}  # task 0 twice
    _, evaluated = model.meta_batch_learn(batch, training=False)
    np.testing.assert_array_equal(model.meta_batch_learn(batch, training=False)[1], evaluated)
    alone = model.meta_batch_learn({key: value[1:] for key, value in batch.items()}, training=False)[1]
    np.testing.assert_allclose(alone[0], evaluated[1], rtol=1e-6)  # a task's answer does not depend on its call
    fewer = {**batch, "query_images": batch["query_images"][:, :2], "query_labels": batch["query_labels"][:, :2]}
    np.testing.assert_allclose(model.meta_batch_learn(fewer, training=False)[1], evaluated[:, :2], rtol=1e-6)
    _, trained = model.meta_batch_learn(same, training=True)
    np.testing.assert_array_equal(model.meta_batch_learn(same, training=True)[1], trained)
    assert np.abs(trained[0] - trained[1]).max() > 1e-3, "two tasks of one step must draw different noise"
    model.optimizer.iterations.assign_add(1)
    assert np.abs(model.meta_batch_learn(same, training=True)[1] - trained).max() > 1e-3, "a new step, new noise"


def relabelled_support(batch):
    """The same task with every support label moved to the next class: a learner of the support set follows it."""
    ways = tf.reduce_max(batch["support_labels"]) + 1
    return {**batch, "support_labels": (batch["support_labels"] + 1) % ways}


def test_learns_an_easy_task_from_its_support_set():
    """Bright squares at a class's own place: 40 steps classify new episodes of unseen noise (measured 1.00 on these
    20 episodes, moved 0.00), and moving the support labels moves the answers (a VERSA that ignores the support set scores
    chance, 0.2, on both)."""
    keras.utils.set_random_seed(0)
    spec = EpisodeSpec(5, 1, 3)
    model = Versa(mssl_tf.conv4())
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(episode_dataset(easy_classes(), spec, meta_batch=2, seed=11), steps_per_epoch=40, verbose=0)
    held_out = easy_classes(seed=1)
    result = evaluate(model, held_out, spec, episodes=20)
    assert result["accuracy"] >= 85.0
    moved = [np.mean(np.argmax(model.meta_batch_learn(relabelled_support(batch), training=False)[1], -1)
                     == batch["query_labels"].numpy())
             for batch in episode_dataset(held_out, spec, meta_batch=10, seed=4, num_episodes=20)]
    assert np.mean(moved) <= 0.1
