"""MAML's meta-gradient against a hand derivation on a linear softmax classifier, and its two inner-loop paths."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.backbones import conv4
from mssl_tf.methods import MAML, build_method
from mssl_tf.ops import task_batched

ALPHA = 0.5


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def loss_and_gradient(W, X, labels):
    """Cross-entropy of logits X @ W (bias folded into X) and its gradient with respect to W."""
    P = softmax(X @ W)
    Y = np.eye(W.shape[1])[labels]
    return -np.mean(np.log(P[np.arange(len(X)), labels])), X.T @ (P - Y) / len(X)


def hessian_vector_product(W, X, V):
    """d/dW <grad L(W), V> for softmax cross-entropy: (1/n) sum_i x_i [(diag p_i - p_i p_i^T) V^T x_i]^T."""
    P = softmax(X @ W)
    U = X @ V  # [n, k], row i = V^T x_i
    inner = P * U - P * np.sum(P * U, axis=1, keepdims=True)
    return X.T @ inner / len(X)


def hand_meta_gradient(W, support, support_labels, query, query_labels):
    _, g_support = loss_and_gradient(W, support, support_labels)
    adapted = W - ALPHA * g_support
    _, g_query = loss_and_gradient(adapted, query, query_labels)
    first_order = g_query
    second_order = g_query - ALPHA * hessian_vector_product(W, support, g_query)
    return first_order, second_order


def linear_maml(first_order):
    inputs = keras.Input((3,))
    backbone = keras.Model(inputs, keras.layers.Identity()(inputs))
    model = MAML(backbone, ways=2, inner_steps=1, inner_learning_rate=ALPHA, first_order=first_order)
    rng = np.random.default_rng(0)
    model.classifier.kernel.assign(rng.normal(size=(3, 2)).astype(np.float32))
    model.classifier.bias.assign(np.array([0.1, -0.2], np.float32))
    return model


def tiny_task():
    rng = np.random.default_rng(1)
    support, query = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    return support, np.array([0, 1, 0, 1]), query, np.array([1, 0, 1, 1, 0, 0])


def tf_meta_gradient(model, support, support_labels, query, query_labels):
    batch = {
        "support_images": tf.constant(support[None], tf.float32),
        "support_labels": tf.constant(support_labels[None], tf.int32),
        "query_images": tf.constant(query[None], tf.float32),
        "query_labels": tf.constant(query_labels[None], tf.int32),
    }
    variables = [model.classifier.kernel, model.classifier.bias]
    with tf.GradientTape() as tape:
        losses, _ = model.meta_batch_learn(batch, training=True)
        loss = tf.reduce_mean(losses)
    kernel_grad, bias_grad = tape.gradient(loss, variables)
    return np.concatenate([kernel_grad.numpy(), bias_grad.numpy()[None]], axis=0)


@pytest.mark.parametrize("first_order", [False, True])
def test_one_step_meta_gradient_matches_hand_derivation(first_order):
    model = linear_maml(first_order)
    support, support_labels, query, query_labels = tiny_task()
    W = np.concatenate([model.classifier.kernel.numpy(), model.classifier.bias.numpy()[None]], 0).astype(np.float64)
    with_bias = lambda X: np.concatenate([X, np.ones((len(X), 1))], 1)  # noqa: E731
    expected_first, expected_second = hand_meta_gradient(
        W, with_bias(support), support_labels, with_bias(query), query_labels
    )
    measured = tf_meta_gradient(model, support, support_labels, query, query_labels)
    np.testing.assert_allclose(measured, expected_first if first_order else expected_second, rtol=1e-4, atol=1e-6)


def test_first_order_differs_by_exactly_the_second_order_term():
    support, support_labels, query, query_labels = tiny_task()
    second = tf_meta_gradient(linear_maml(False), support, support_labels, query, query_labels)
    first = tf_meta_gradient(linear_maml(True), support, support_labels, query, query_labels)
    model = linear_maml(False)
    W = np.concatenate([model.classifier.kernel.numpy(), model.classifier.bias.numpy()[None]], 0).astype(np.float64)
    with_bias = lambda X: np.concatenate([X, np.ones((len(X), 1))], 1)  # noqa: E731
    _, g_support = loss_and_gradient(W, with_bias(support), support_labels)
    _, g_query = loss_and_gradient(W - ALPHA * g_support, with_bias(query), query_labels)
    missing_term = ALPHA * hessian_vector_product(W, with_bias(support), g_query)
    assert np.abs(missing_term).max() > 1e-3, "the example must have a visible second-order term"
    np.testing.assert_allclose(first - second, missing_term, rtol=1e-4, atol=1e-6)


def conv_batch(tasks=3, ways=3, shots=2, queries=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "support_images": tf.constant(rng.random((tasks, ways * shots, 28, 28, 1)), tf.float32),
        "support_labels": tf.constant(np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)), tf.int32),
        "query_images": tf.constant(rng.random((tasks, ways * queries, 28, 28, 1)), tf.float32),
        "query_labels": tf.constant(np.tile(np.repeat(np.arange(ways), queries), (tasks, 1)), tf.int32),
    }


@pytest.mark.parametrize("name, head", [("maml", "per_class"), ("metasgd", "per_class"), ("anil", "per_class"),
                                        ("maml", "shared"), ("anil", "shared")])
def test_task_batched_inner_loop_equals_stateless_call_per_task(name, head):
    if not task_batched.grouped_convolution_gradients():
        pytest.skip("this TensorFlow build cannot differentiate grouped convolutions here (oneDNN off on this CPU; "
                    "TF_ENABLE_ONEDNN_OPTS=1 turns it on): MAML runs every task with stateless_call")
    keras.utils.set_random_seed(3)
    ways = 3 if head == "per_class" else 5  # a shared head trained 5-way runs the 3-way tasks
    batched = build_method(name, conv4(), ways=ways, inner_steps=2, inner_learning_rate=0.1, head=head)
    per_task = build_method(name, conv4(), ways=ways, inner_steps=2, inner_learning_rate=0.1, task_batching=False,
                            head=head)
    assert batched.batched and not per_task.batched
    per_task.set_weights(batched.get_weights())
    batch = conv_batch()
    results = []
    for model in (batched, per_task):
        with tf.GradientTape() as tape:
            losses, logits = model.meta_batch_learn(batch, training=True)
            loss = tf.reduce_mean(losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        results.append((losses.numpy(), logits.numpy(), [g.numpy() for g in gradients]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-4)
    # Biases before batch norm have a zero true gradient (only float noise): compare on the global scale.
    batched_gradients = np.concatenate([g.ravel() for g in results[0][2]])
    per_task_gradients = np.concatenate([g.ravel() for g in results[1][2]])
    np.testing.assert_allclose(
        batched_gradients, per_task_gradients, rtol=1e-3, atol=1e-4 * np.abs(per_task_gradients).max()
    )


def test_inner_steps_lower_the_support_loss():
    keras.utils.set_random_seed(4)
    model = MAML(conv4(), ways=3, inner_steps=3, inner_learning_rate=0.01)
    batch = conv_batch()
    losses = []
    for steps in range(3):
        _, logits = model.adapt_tasks(batch["support_images"], batch["support_labels"], steps, batch["support_images"])
        losses.append(float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            batch["support_labels"], logits))))
    assert losses[0] > losses[1] > losses[2]
