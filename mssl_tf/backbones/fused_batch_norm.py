"""Batch normalization that trains with TensorFlow's fused kernel."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mssl_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training pass on 4-D channels-last inputs uses `FusedBatchNormV3`.

    Keras 3 normalizes with separate moments / normalize ops, each a full pass over the activations; the fused
    kernel computes the same values (biased batch variance, same moving-average update) in one pass and is
    about 5x faster forward and backward on Conv-4's first block (benchmarks/README.md), though its second
    derivative is slower than the unfused ops'. Inference and other
    input ranks use the Keras path unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        fusable = (
            training
            and mask is None
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            and inputs.dtype == tf.float32
        )
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, unbiased_variance = fused_batch_norm(inputs, self.gamma, self.beta, self.epsilon)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), inputs.dtype)
        variance = unbiased_variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


def fused_batch_norm(inputs, gamma, beta, epsilon):
    """Training-mode batch norm of NHWC `inputs` → (outputs, batch mean, unbiased batch variance)."""
    return tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta), epsilon=epsilon, is_training=True
    )
