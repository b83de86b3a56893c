"""Batch normalization that trains with TensorFlow's fused kernels and has a cheap second derivative."""

from __future__ import annotations

import keras
import tensorflow as tf

_FUSED_DTYPES = (tf.float32,)


@keras.saving.register_keras_serializable(package="mssl_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training pass on 4-D channels-last inputs uses `fused_batch_norm`.

    Keras 3 normalizes with separate moments / normalize ops, each a full pass over the activations; the fused
    kernel computes the same values (biased batch variance, same moving-average update) in one pass and is
    about 5x faster forward and backward on Conv-4's first block (benchmarks/README.md). Its second derivative
    (MAML's inner loop) is closed-form (`fused_batch_norm`). Inference and other input ranks use the Keras path
    unchanged; float64 training (the finite-difference tests) normalizes with the same derivatives, unfused.
    """

    def call(self, inputs, training=None, mask=None):
        supported = (
            training
            and mask is None
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and inputs.dtype in (tf.float32, tf.float64)
        )
        if not supported:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, unbiased_variance = fused_batch_norm(inputs, self.gamma, self.beta, self.epsilon)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), inputs.dtype)
        variance = unbiased_variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


def fused_batch_norm(inputs, gamma, beta, epsilon):
    """Training-mode batch norm of NHWC `inputs` → (outputs, batch mean, unbiased batch variance).

    The forward pass and the gradient are TensorFlow's fused kernels (`FusedBatchNormV3` and its grad) on float32.
    TensorFlow differentiates that gradient kernel (second order, as MAML's meta-gradient does) by rebuilding the
    batch-norm backward from unfused ops under a tape and differentiating them; here the derivative of the backward
    is written out in closed form instead (`_backward_derivatives`): about half the passes over the activations.
    Float64 inputs (no fused kernel) normalize with unfused ops and take the same derivatives. The batch mean and
    variance are statistics for the moving averages and carry no gradient (as TensorFlow's fused op's).
    """
    gamma, beta = tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta)
    statistics = []

    @tf.custom_gradient
    def normalize(inputs, gamma, beta):
        if inputs.dtype in _FUSED_DTYPES:
            empty = tf.constant([], inputs.dtype)
            outputs, mean, variance, *reserve = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=epsilon,
                exponential_avg_factor=1.0, is_training=True)
        else:
            reserve = None
            outputs, mean, variance = _unfused_normalize(inputs, gamma, beta, epsilon)
        statistics.extend([mean, variance])

        def gradient(upstream):
            return _backward(upstream, inputs, gamma, reserve, epsilon)

        return outputs, gradient

    outputs = normalize(inputs, gamma, beta)
    return outputs, tf.stop_gradient(statistics[0]), tf.stop_gradient(statistics[1])


_AXES = (0, 1, 2)


def _unfused_normalize(inputs, gamma, beta, epsilon):
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), inputs.dtype)
    mean = tf.reduce_mean(inputs, _AXES)
    centered = inputs - mean
    variance = tf.reduce_mean(tf.square(centered), _AXES)
    outputs = centered * (gamma * tf.math.rsqrt(variance + epsilon)) + beta
    return outputs, mean, variance * count / (count - 1.0)


def _backward(upstream, inputs, gamma, reserve, epsilon):
    """(d inputs, d gamma, d beta) of the training-mode batch norm for `upstream` = d outputs.

    With x̂ the normalized inputs, σ their batch standard deviation and means over batch and space:
    d inputs = (γ/σ)(dy − mean(dy) − x̂ mean(dy x̂)), d gamma = Σ dy x̂, d beta = Σ dy.
    """

    @tf.custom_gradient
    def backward(upstream, inputs, gamma):
        if reserve is not None:
            d_inputs, d_gamma, d_beta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=upstream, x=inputs, scale=gamma, reserve_space_1=reserve[0], reserve_space_2=reserve[1],
                reserve_space_3=reserve[2], epsilon=epsilon, is_training=True)
        else:
            d_inputs, d_gamma, d_beta = _unfused_backward(upstream, inputs, gamma, epsilon)

        def gradient(d_d_inputs, d_d_gamma, d_d_beta):
            return _backward_derivatives(upstream, inputs, gamma, epsilon, d_d_inputs, d_d_gamma, d_d_beta)

        return (d_inputs, d_gamma, d_beta), gradient

    return backward(upstream, inputs, gamma)


def _statistics(inputs, epsilon):
    """(count, centered inputs, 1/σ) per channel, from unfused ops (differentiable to any order)."""
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), inputs.dtype)
    centered = inputs - tf.reduce_mean(inputs, _AXES)
    inverse_deviation = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), _AXES) + epsilon)
    return count, centered, inverse_deviation


def _unfused_backward(upstream, inputs, gamma, epsilon):
    count, centered, inverse_deviation = _statistics(inputs, epsilon)
    normalized = centered * inverse_deviation
    d_beta = tf.reduce_sum(upstream, _AXES)
    d_gamma = tf.reduce_sum(upstream * normalized, _AXES)
    d_inputs = (gamma * inverse_deviation) * (upstream - d_beta / count - normalized * (d_gamma / count))
    return d_inputs, d_gamma, d_beta


def _backward_derivatives(upstream, inputs, gamma, epsilon, u, a, b):
    """Vector-Jacobian product of `_backward`: (d upstream, d inputs, d gamma) of Φ = Σ u·dx + a·dγ + b·dβ.

    Per channel, with N the count, r = 1/σ, x̂ = (x − μ) r, B = Σ dy, G = Σ dy x̂, U = Σ u, P = Σ u x̂, Q = Σ u dy
    and the projection F(v) = v − B_v/N − x̂ G_v/N (so dx = γ r F(dy)), using ∂x̂_i/∂x_j = r(δ_ij − 1/N − x̂_i x̂_j/N)
    and ∂r/∂x_j = −r² x̂_j/N:
        ∂Φ/∂dy = γ r F(u) + a x̂ + b
        ∂Φ/∂γ  = r (Q − U B/N − P G/N)
        ∂Φ/∂x  = r (a − γ r P/N) F(dy) − γ r² (G/N) F(u) − r² γ (Q − U B/N − P G/N) x̂ / N
    Statistics are recomputed from the inputs by differentiable ops, so this is exact to any order.
    """
    count, centered, r = _statistics(inputs, epsilon)
    B = tf.reduce_sum(upstream, _AXES)
    G = r * tf.reduce_sum(upstream * centered, _AXES)
    U = tf.reduce_sum(u, _AXES)
    P = r * tf.reduce_sum(u * centered, _AXES)
    Q = tf.reduce_sum(u * upstream, _AXES)
    T = Q - U * B / count - P * G / count
    gamma_r = gamma * r
    # Written as per-channel coefficients of the three full-size tensors centered, upstream, u, plus a constant.
    c_dy = r * (a - gamma_r * P / count)
    c_u = -gamma_r * r * G / count
    c_centered = r * (-r * gamma_r * T / count - c_dy * G / count - c_u * P / count)
    d_inputs = c_centered * centered + c_dy * upstream + c_u * u - (c_dy * B + c_u * U) / count
    d_upstream = gamma_r * u + r * (a - gamma_r * P / count) * centered + (b - gamma_r * U / count)
    d_gamma = r * T
    return d_upstream, d_inputs, d_gamma
