"""Siamese and Relation networks: their scores and losses against hand-derived values, and training with `fit`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf import backbones
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.methods import build_method
from mssl_tf.methods.relation import relation_loss, relation_pairs
from mssl_tf.methods.siamese import best_match_logits, pair_scores, verification_loss
from tests.conftest import labelled_classes


def test_siamese_scores_are_weighted_l1_distances_and_classes_take_their_best_match():
    support = tf.constant([[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]])
    labels = tf.constant([0, 0, 1])
    query = tf.constant([[1.0, 1.0]])
    weights, bias = tf.constant([-1.0, -2.0]), tf.constant(0.5)
    # |q - s| = (1, 1), (3, 1), (1, 2) → -1·a - 2·b + 0.5
    expected = np.array([[-2.5, -4.5, -4.5]], np.float32)
    scores = pair_scores(query, support, weights, bias)
    np.testing.assert_allclose(scores, expected)
    np.testing.assert_allclose(best_match_logits(scores, labels), [[-2.5, -4.5]])  # max over class 0's two
    same = np.array([[1.0, 1.0, 0.0]])
    expected_loss = np.mean(np.log1p(np.exp(-expected)) * same + np.log1p(np.exp(expected)) * (1 - same))
    np.testing.assert_allclose(verification_loss(scores, labels, tf.constant([0])), expected_loss, rtol=1e-6)


def test_relation_pairs_and_loss_by_hand():
    pairs = relation_pairs(tf.constant([[1.0], [2.0]]), tf.constant([[10.0], [20.0], [30.0]]))
    np.testing.assert_array_equal(pairs[1, 2], [2.0, 30.0])
    assert pairs.shape == (2, 3, 2)
    scores = tf.constant([[0.9, 0.2], [0.4, 0.3]])
    # targets (1, 0) and (0, 1): squared errors 0.01, 0.04, 0.16, 0.49
    np.testing.assert_allclose(relation_loss(scores, tf.constant([0, 1])), (0.01 + 0.04 + 0.16 + 0.49) / 4, rtol=1e-6)


def test_relation_classes_are_the_sum_of_their_support_features():
    keras.utils.set_random_seed(0)
    model = build_method("relation", backbones.conv4())
    support = tf.random.normal([4, 64])
    labels = tf.constant([0, 1, 0, 1])
    query = tf.random.normal([3, 64])
    class_features = tf.stack([support[0] + support[2], support[1] + support[3]])
    expected = model.relation_module(tf.reshape(relation_pairs(query, class_features), [-1, 128]))
    np.testing.assert_allclose(model.relation_scores(support, labels, query), tf.reshape(expected, [3, 2]),
                               rtol=1e-5)


@pytest.mark.parametrize("name", ["siamese", "relation"])
def test_fit_lowers_the_loss_and_the_model_round_trips(name, tmp_path):
    keras.utils.set_random_seed(0)
    images = labelled_classes(classes=10, drawings=6)
    model = build_method(name, backbones.conv4())
    model.compile(keras.optimizers.Adam(1e-3))
    dataset = episode_dataset(images, EpisodeSpec(5, 1, 2), meta_batch=2, seed=0)
    fixed = next(iter(dataset))
    # Batch statistics (training=True) on both sides: 30 steps barely move batch norm's moving averages.
    before = float(tf.reduce_mean(model.meta_batch_learn(fixed, training=True)[0]))
    model.fit(dataset.take(1).repeat(), steps_per_epoch=30, epochs=1, verbose=0)
    after = float(tf.reduce_mean(model.meta_batch_learn(fixed, training=True)[0]))
    assert after < before, (before, after)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.meta_batch_learn(fixed, training=False)[1],
                               model.meta_batch_learn(fixed, training=False)[1], rtol=1e-5, atol=1e-6)
