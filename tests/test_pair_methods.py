"""Siamese and Relation networks: their scores and losses against hand-derived values, and training with `fit`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf import backbones
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.methods import build_method
from mssl_tf.evaluation import episode_predictions
from mssl_tf.input_spec import drawings
from mssl_tf.methods.relation import RelationNet, relation_loss, relation_pairs
from mssl_tf.methods.siamese import best_match_logits, pair_scores, verification_loss
from mssl_tf.signatures import signatures
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


def feature_relation_net(class_pooling):
    """A Relation Network on 1-d features whose module is one sigmoid unit: score = σ(0.5·query + class)."""
    features = keras.Input((1,))
    model = RelationNet(keras.Model(features, features), hidden_units=(), class_pooling=class_pooling)
    model.relation_module.layers[-1].set_weights([np.array([[0.5], [1.0]], np.float32), np.zeros(1, np.float32)])
    return model


@pytest.mark.parametrize("class_pooling, class_inputs", [("sum", (4.0, 2.0)), ("mean", (2.0, 2.0))])
def test_relation_classes_pool_their_support_features_by_hand(class_pooling, class_inputs):
    # Class 0 has two shots (1 and 3), class 1 one (2): sums 4 and 2, means 2 and 2. The query is 2 (0.5·2 = 1).
    model = feature_relation_net(class_pooling)
    scores = model.relation_scores(tf.constant([[1.0], [2.0], [3.0]]), tf.constant([0, 1, 0]), tf.constant([[2.0]]))
    expected = 1 / (1 + np.exp(-(1.0 + np.array(class_inputs))))
    np.testing.assert_allclose(scores, [expected], rtol=1e-6)


def test_relation_pooling_is_saved_and_the_served_few_shot_pools_as_evaluation_does(tmp_path):
    """3-shot tasks (where the poolings differ): `.keras` keeps the pooling, and the `few_shot` signature's
    probabilities equal `mssl-tf eval`'s (`episode_predictions`) on the same episodes."""
    images = labelled_classes(classes=5, drawings=5)
    spec, episodes = EpisodeSpec(3, 3, 2), dict(episodes=2, tasks_per_call=1, seed=3)
    served = {}
    for class_pooling in ("mean", "sum"):
        keras.utils.set_random_seed(0)
        model = build_method("relation", backbones.conv4(filters=8), class_pooling=class_pooling)
        model.save(tmp_path / f"{class_pooling}.keras")
        reloaded = keras.saving.load_model(tmp_path / f"{class_pooling}.keras")
        assert reloaded.get_config()["class_pooling"] == class_pooling
        evaluated = episode_predictions(reloaded, images, spec, **episodes)[1]
        np.testing.assert_allclose(evaluated, episode_predictions(model, images, spec, **episodes)[1], rtol=1e-5,
                                   atol=1e-6)
        few_shot = signatures(reloaded, drawings())["few_shot"]
        served[class_pooling] = np.concatenate([
            tf.nn.softmax(few_shot(support_images=as_uint8(batch["support_images"][0]),
                                   support_labels=batch["support_labels"][0],
                                   query_images=as_uint8(batch["query_images"][0]))["logits"]).numpy()
            for batch in episode_dataset(images, spec, meta_batch=1, seed=episodes["seed"],
                                         num_episodes=episodes["episodes"])])
        np.testing.assert_allclose(served[class_pooling], evaluated, rtol=1e-5, atol=1e-6)
    assert not np.allclose(served["mean"], served["sum"], rtol=1e-4, atol=1e-6), "3 shots: the poolings must differ"


def test_relation_models_saved_before_the_pooling_option_load_summing():
    config = build_method("relation", backbones.conv4(filters=8)).get_config()
    del config["class_pooling"]
    assert RelationNet.from_config(config).class_pooling == "sum"
    with pytest.raises(ValueError, match="class_pooling must be one of"):
        build_method("relation", backbones.conv4(filters=8), class_pooling="max")


def as_uint8(images01):
    return tf.cast(tf.round(images01 * 255.0), tf.uint8)


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
