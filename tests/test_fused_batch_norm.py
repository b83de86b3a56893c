"""`fused_batch_norm`: first and second derivatives against float64 central differences and against TensorFlow's
own fused op, and MAML's second-order meta-gradient through a batch-normalized Conv-4 against central differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.backbones import conv4
from mssl_tf.backbones.fused_batch_norm import fused_batch_norm
from mssl_tf.methods import build_method
from tests.conftest import central_differences


def tiny_inputs(dtype, seed=0):
    """NHWC inputs away from zero mean and unit scale, per-channel gamma and beta, and fixed random weightings."""
    rng = np.random.default_rng(seed)
    shape = (2, 3, 3, 2)
    values = [rng.normal(size=shape) * 2 + 1, rng.uniform(0.5, 1.5, 2), rng.normal(size=2),
              rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=2), rng.normal(size=2)]
    return [tf.constant(value, dtype) for value in values]


def loss_and_derivatives(normalize, inputs, gamma, beta, weights, v, c, d):
    """L = Σ w tanh(BN(x)) (tanh so that dL/dy depends on y); its gradient; the gradient of
    Φ = Σ v·∂L/∂x + Σ c·∂L/∂γ + Σ d·∂L/∂β (a second derivative of L along (v, c, d))."""
    with tf.GradientTape() as outer:
        outer.watch([inputs, gamma, beta])
        with tf.GradientTape() as inner:
            inner.watch([inputs, gamma, beta])
            loss = tf.reduce_sum(weights * tf.tanh(normalize(inputs, gamma, beta)))
        first = inner.gradient(loss, [inputs, gamma, beta])
        phi = tf.reduce_sum(first[0] * v) + tf.reduce_sum(first[1] * c) + tf.reduce_sum(first[2] * d)
    return loss, first, phi, outer.gradient(phi, [inputs, gamma, beta])


def ours(inputs, gamma, beta):
    return fused_batch_norm(inputs, gamma, beta, 1e-3)[0]


def tensorflows(inputs, gamma, beta):
    return tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=1e-3, is_training=True)[0]


def flat(tensors):
    return np.concatenate([np.ravel(t) for t in tensors])


def test_first_and_second_derivatives_match_float64_central_differences():
    inputs, gamma, beta, weights, v, c, d = tiny_inputs(tf.float64)
    variables = [tf.Variable(inputs), tf.Variable(gamma), tf.Variable(beta)]

    def evaluate():
        return loss_and_derivatives(ours, *(variable.value() for variable in variables), weights, v, c, d)

    _, first, _, second = evaluate()
    numeric_first = central_differences(lambda: evaluate()[0], variables, 1e-6)
    numeric_second = central_differences(lambda: evaluate()[2], variables, 1e-6)
    np.testing.assert_allclose(flat(first), numeric_first, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(flat(second), numeric_second, rtol=1e-6, atol=1e-8)
    assert np.abs(numeric_second).max() > 0.1, "the second derivative must be visible"


@pytest.mark.parametrize("compiled", [False, True])
def test_float32_fused_kernels_match_tensorflows_fused_op_to_second_order(compiled):
    """On float32 the forward and first derivative are TensorFlow's fused kernels and the second is closed-form;
    TensorFlow's own second derivative of its fused op (unfused ops under a tape) is the reference."""
    arguments = tiny_inputs(tf.float32)
    evaluate = tf.function(loss_and_derivatives) if compiled else loss_and_derivatives
    _, first, _, second = evaluate(ours, *arguments)
    _, reference_first, _, reference_second = evaluate(tensorflows, *arguments)
    np.testing.assert_allclose(flat(first), flat(reference_first), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flat(second), flat(reference_second), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_statistics_are_the_batch_mean_and_unbiased_variance(dtype):
    """What the moving averages are updated with, on the fused (float32) and the unfused (float64) path."""
    inputs, gamma, beta = tiny_inputs(dtype)[:3]
    _, mean, variance = fused_batch_norm(inputs, gamma, beta, 1e-3)
    np.testing.assert_allclose(mean, np.mean(inputs, (0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance, np.var(inputs, (0, 1, 2), ddof=1), rtol=1e-5)


def test_maml_meta_gradient_through_batch_norm_matches_central_differences(float64):
    """Second-order MAML, two inner steps, on a one-block batch-normalized Conv-4 (float64: the unfused path, same
    derivatives as the fused one): every weight's meta-gradient against central differences of the meta-loss.

    Per-task path: TensorFlow has no float64 gradient of grouped convolutions on CPU; the grouped path equals this
    one in float32 (tests/test_maml.py)."""
    keras.utils.set_random_seed(7)
    model = build_method("maml", conv4(input_shape=(4, 4, 1), filters=2, blocks=1), ways=2, inner_steps=2,
                         inner_learning_rate=0.5, task_batching=False)
    rng = np.random.default_rng(3)
    batch = {"support_images": tf.constant(rng.normal(size=(2, 4, 4, 4, 1))),
             "support_labels": tf.constant([[0, 1, 0, 1]] * 2),
             "query_images": tf.constant(rng.normal(size=(2, 4, 4, 4, 1))),
             "query_labels": tf.constant([[1, 0, 0, 1]] * 2)}
    meta_loss = tf.function(lambda: tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0]))
    with tf.GradientTape() as tape:
        loss = meta_loss()
    analytic = flat(tape.gradient(loss, model.trainable_variables))
    numeric = central_differences(meta_loss, model.trainable_variables, 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
