import numpy as np
import tensorflow as tf

from mssl_tf.methods.matching import matching_log_probabilities
from mssl_tf.methods.protonet import prototype_logits


def test_prototype_logits_on_a_hand_made_example():
    support = tf.constant([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    labels = tf.constant([0, 0, 1, 1])
    query = tf.constant([[1.0, 1.0], [0.0, 3.0]])
    # prototypes: (1, 0) and (0, 3)
    expected = -np.array([[0 + 1, 1 + 4], [1 + 9, 0 + 0]], np.float32)
    np.testing.assert_allclose(prototype_logits(support, labels, query), expected, atol=1e-5)


def test_matching_attention_on_a_hand_made_example():
    support = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = tf.constant([0, 1, 1])
    query = tf.constant([[2.0, 0.0]])
    cosines = np.array([1.0, 0.0, 1 / np.sqrt(2)])
    attention = np.exp(cosines) / np.exp(cosines).sum()
    expected = np.log([[attention[0], attention[1] + attention[2]]])
    np.testing.assert_allclose(matching_log_probabilities(support, labels, query), expected, rtol=1e-5)
    scaled = np.exp(10 * cosines) / np.exp(10 * cosines).sum()
    np.testing.assert_allclose(
        np.exp(matching_log_probabilities(support, labels, query, scale=10.0)),
        [[scaled[0], scaled[1] + scaled[2]]], rtol=1e-4,
    )
