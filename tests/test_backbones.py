import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.backbones import FusedBatchNormalization


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_equals_keras_batch_norm(training):
    images = tf.random.stateless_normal([6, 5, 5, 4], seed=[1, 2]) * 3 + 1
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    reference.build(images.shape)
    fused.build(images.shape)
    gamma = np.linspace(0.5, 2.0, 4).astype(np.float32)
    for layer in (reference, fused):
        layer.gamma.assign(gamma)
        layer.beta.assign(-gamma)
    outputs = []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(images)
            output = layer(images, training=training)
            loss = tf.reduce_sum(output * tf.range(4, dtype=tf.float32))
        outputs.append((output, tape.gradient(loss, [images, layer.gamma, layer.beta])))
    np.testing.assert_allclose(outputs[1][0], outputs[0][0], atol=1e-5)
    for fused_gradient, reference_gradient in zip(outputs[1][1], outputs[0][1]):
        np.testing.assert_allclose(fused_gradient, reference_gradient, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, atol=1e-5)
