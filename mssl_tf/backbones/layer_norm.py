"""Layer normalization whose derivatives of every order are exact (for a transformer inside MAML's inner loop).

Keras' `LayerNormalization` computes its variance with `tf.nn.moments`, which centres by `stop_gradient(mean)`.
That leaves the first derivative right (the variance's derivative with respect to the mean is zero at the mean)
and the second wrong: the term through the mean is cut. Second-order MAML through it measured wrong against
central differences (tests/test_text.py); this layer centres by the mean itself, with the same weights, config and
forward values.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mssl_tf")
class ExactLayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis, differentiable to any order (see the module docstring)."""

    def call(self, inputs):
        if self.axis != [len(inputs.shape) - 1] and self.axis != -1 and list(self.axis) != [-1]:
            raise ValueError(f"ExactLayerNormalization normalizes the last axis only, got axis={self.axis}")
        mean = tf.reduce_mean(inputs, axis=-1, keepdims=True)
        centred = inputs - mean
        variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
        outputs = centred * tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            outputs = outputs * tf.cast(self.gamma, outputs.dtype)
        if self.center:
            outputs = outputs + tf.cast(self.beta, outputs.dtype)
        return outputs
