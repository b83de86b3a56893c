"""Every SSL registry entry on real Omniglot views: a two-step fit and a `.keras` round trip; the shared machinery
(online probe, EMA targets, MoCo's queue), frozen-encoder evaluation, and `mssl-tf train/eval` for SSL runs."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf import cli
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.data.views import flatten_classes, multi_view_dataset
from mssl_tf.data import omniglot
from mssl_tf.evaluation import (
    fit_and_score_split,
    frozen_embeddings,
    knn_accuracy,
    linear_probe_accuracy,
    nearest_neighbor_predictions,
    train_linear_classifier,
)
from mssl_tf.methods import METHODS, SSL_METHODS, build_method
from mssl_tf.training import load_trained
from tests.conftest import labelled_classes

SMALL = {"hidden_units": [64], "projection_units": 32}
OPTIONS = {
    "simclr": SMALL,
    "simcse": {"temperature": 0.1},
    "moco": {**SMALL, "queue_size": 64},
    "psco": {**SMALL, "queue_size": 64, "shots": 2, "evaluation": "heads"},
    "byol": {**SMALL, "total_steps": 10},
    "simsiam": {**SMALL, "predictor_units": 16},
    "barlow_twins": SMALL,
    "transformation": {},
}


@pytest.fixture(scope="module")
def views(train_images):
    images, labels = flatten_classes(train_images[:40])
    return multi_view_dataset(images, 16, "omniglot", seed=4, labels=labels).take(2).cache()


@pytest.fixture(scope="module")
def episodes(train_images):
    return next(iter(episode_dataset(train_images[:40], EpisodeSpec(5, 1, 3), meta_batch=2, seed=9)))


def test_every_ssl_method_is_registered():
    assert set(OPTIONS) == set(SSL_METHODS) and set(SSL_METHODS) <= set(METHODS)


@pytest.mark.parametrize("name", sorted(SSL_METHODS))
def test_two_step_fit_and_keras_round_trip(name, views, episodes, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_method(name, mssl_tf.conv4(), **OPTIONS[name])
    model.compile(keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in model.backbone.get_weights()]
    history = model.fit(views, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert "probe_loss" not in history.history  # no probe unless asked for
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.backbone.get_weights()))

    model.save(tmp_path / "model.keras")
    restored, _ = load_trained(tmp_path / "model.keras")
    assert type(restored) is type(model)
    assert json.loads(json.dumps(restored.get_config())) == json.loads(json.dumps(model.get_config()))
    for original, loaded in zip(model.weights, restored.weights):  # targets and queue included
        np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=original.path)
    images = episodes["query_images"][0]
    np.testing.assert_allclose(restored(images), model(images), atol=1e-6)
    _, logits = model.meta_batch_learn(episodes, training=False)
    _, restored_logits = restored.meta_batch_learn(episodes, training=False)
    assert logits.shape == (2, 15, 5)
    np.testing.assert_allclose(restored_logits, logits, rtol=1e-5, atol=1e-5)


def nearest_mean_probe(features, labels, classes):
    """A linear classifier `(kernel [dim, classes], bias [classes])`: logit_c = f·m_c − |m_c|²/2 (nearest class mean of
    `features`); classes absent from `labels` get a bias far below every other logit."""
    kernel = np.zeros([features.shape[1], classes], np.float32)
    bias = np.full([classes], -1e4, np.float32)
    for label in np.unique(labels):
        mean = features[labels == label].mean(axis=0)
        kernel[:, label], bias[label] = mean, -0.5 * mean @ mean
    return kernel, bias


def test_online_probe_learns_from_labels_without_touching_the_encoder(views):
    first = next(iter(views))
    first_labels = first["labels"].numpy()
    trained = {}
    for probe_classes in (0, 40):
        keras.utils.set_random_seed(0)
        model = build_method("simclr", mssl_tf.conv4(), probe_classes=probe_classes, **SMALL)
        model.compile(keras.optimizers.Adam(1e-3))
        if probe_classes:
            # The features the first step's probe sees, from a twin with the same weights (the method's own hook).
            twin = build_method("simclr", mssl_tf.conv4(), probe_classes=probe_classes, **SMALL)
            twin.set_weights(model.get_weights())
            _, features = twin.compute_ssl_loss(tf.unstack(first["views"], axis=1), training=True)
            features = features.numpy().astype(np.float64)
            kernel, bias = nearest_mean_probe(features, first_labels, probe_classes)
            model.probe.kernel.assign(kernel)
            model.probe.bias.assign(bias)
            logits = features @ kernel + bias
            probe_before = kernel
        history = model.fit(views, epochs=2, steps_per_epoch=1, verbose=0)  # one step per epoch: per-step metrics
        trained[probe_classes] = (model, history.history)
    with_probe, history = trained[40]
    assert np.isfinite(history["probe_loss"]).all()
    # The first step's probe metrics are those of that classifier on the first batch, computed here.
    expected_accuracy = np.mean(np.argmax(logits, axis=1) == first_labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -np.mean(log_probabilities[np.arange(len(first_labels)), first_labels])
    assert expected_accuracy > 0.5 > np.mean(np.argmax(logits, axis=1) == np.roll(first_labels, 1))
    assert history["probe_accuracy"][0] == pytest.approx(expected_accuracy, abs=1e-6)
    assert history["probe_loss"][0] == pytest.approx(expected_loss, rel=1e-3)
    assert not np.array_equal(with_probe.probe.kernel.numpy(), probe_before)
    without_probe = trained[0][0]
    for a, b in zip(without_probe.backbone.weights + without_probe.projector.weights,
                    with_probe.backbone.weights + with_probe.projector.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_byol_target_follows_the_cosine_schedule(views):
    keras.utils.set_random_seed(0)
    model = build_method("byol", mssl_tf.conv4(), base_decay=0.9, total_steps=4, **SMALL)
    model.compile(keras.optimizers.SGD(0.1))
    expected = [1 - 0.1 * (math.cos(math.pi * k / 4) + 1) / 2 for k in range(5)]
    for step, decay in enumerate(expected):
        model.optimizer.iterations.assign(step)
        assert float(model.decay()) == pytest.approx(decay, abs=1e-6)
    model.optimizer.iterations.assign(0)
    model.fit(views.take(1), epochs=1, steps_per_epoch=1, verbose=0)
    online = [online.numpy() for online, _ in model.target_pairs]
    target = [target.numpy() for _, target in model.target_pairs]
    # The first update blends identical weights: the target is still the initial online network.
    assert any(not np.allclose(a, b) for a, b in zip(online, target))
    model.fit(views.take(1), epochs=1, steps_per_epoch=1, verbose=0)  # updates with decay τ_1, then steps
    for (_, variable), old_target, old_online in zip(model.target_pairs, target, online):
        np.testing.assert_allclose(variable.numpy(), expected[1] * old_target + (1 - expected[1]) * old_online,
                                   rtol=1e-5, atol=1e-6)


def test_moco_queue_is_a_fifo_of_normalized_keys(views):
    keras.utils.set_random_seed(0)
    model = build_method("moco", mssl_tf.conv4(), queue_size=40, batch_norm_groups=2, **SMALL)
    model.compile(keras.optimizers.SGD(0.1))
    old = model.queue.numpy().copy()
    model.fit(views.take(1), epochs=1, steps_per_epoch=1, verbose=0)
    new = model.queue.numpy()
    np.testing.assert_allclose(new[16:], old[:24])
    np.testing.assert_allclose(np.linalg.norm(new[:16], axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(new[:16], old[:16])


def test_nearest_neighbor_and_linear_probe_on_hand_made_embeddings():
    fit = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.2]])
    labels = np.array([0, 0, 1, 2])
    queries = np.array([[1.0, 0.05], [0.1, 1.0], [-1.0, 0.0], [0.6, 0.5]])
    np.testing.assert_array_equal(nearest_neighbor_predictions(fit, labels, queries), [0, 1, 2, 0])
    # Three neighbors of [0.5, 0.6]: (0.9,0.1) and (1,0) vote 0 with ≈1.39, (0,1) votes 1 with 0.77.
    np.testing.assert_array_equal(nearest_neighbor_predictions(fit, labels, [[0.5, 0.6]], neighbors=3), [0])


def test_frozen_encoder_protocols_score_better_than_chance(train_images):
    keras.utils.set_random_seed(0)
    model = build_method("simclr", mssl_tf.conv4(), **SMALL)  # untrained: random features still separate glyphs
    knn = knn_accuracy(model, train_images[:20])
    linear = linear_probe_accuracy(model, train_images[:20], steps=50)
    for result in (knn, linear):
        assert result["classes"] == 20 and result["scored"] == 200 and result["accuracy"] > 3 * 100 / 20
        assert result["ci95"] == pytest.approx(
            100 * 1.96 * math.sqrt(result["accuracy"] / 100 * (1 - result["accuracy"] / 100) / 200), abs=0.01)
    # No leak: scoring the fitted drawings instead (each its own nearest neighbor; the probe's training set) gives
    # a visibly different number, so a protocol that scored them would be seen.
    fit_images, fit_labels, score_images, _ = fit_and_score_split(train_images[:20])
    fit_embeddings = frozen_embeddings(model, fit_images)
    leaked_knn = 100 * np.mean(nearest_neighbor_predictions(fit_embeddings, fit_labels, fit_embeddings) == fit_labels)
    assert leaked_knn == 100.0 and knn["accuracy"] < leaked_knn - 10
    classifier = train_linear_classifier(fit_embeddings, fit_labels, 20, steps=50)
    leaked_linear = 100 * np.mean(np.argmax(classifier(fit_embeddings).numpy(), axis=-1) == fit_labels)
    assert linear["accuracy"] < leaked_linear - 10
    # The same numbers from the disjoint split computed here: drawings 10-19 of each class are scored.
    score_embeddings = frozen_embeddings(model, score_images)
    held_out_knn = nearest_neighbor_predictions(fit_embeddings, fit_labels, score_embeddings, classes=20)
    assert knn["accuracy"] == pytest.approx(100 * np.mean(held_out_knn == np.repeat(np.arange(20), 10)), abs=0.01)


def test_fit_and_score_drawings_are_disjoint():
    class_images = labelled_classes(classes=5, drawings=20)  # pixel (0, 0) is the class, (0, 1) the drawing
    fit_images, fit_labels, score_images, score_labels = fit_and_score_split(class_images, fit_drawings=10)
    assert fit_images.shape == (50, 28, 28) and score_images.shape == (50, 28, 28)
    np.testing.assert_array_equal(fit_images[:, 0, 0], fit_labels)
    np.testing.assert_array_equal(score_images[:, 0, 0], score_labels)
    np.testing.assert_array_equal(fit_images[:, 0, 1], np.tile(np.arange(10), 5))
    np.testing.assert_array_equal(score_images[:, 0, 1], np.tile(np.arange(10, 20), 5))
    with pytest.raises(ValueError, match="fit_drawings"):
        fit_and_score_split(class_images, fit_drawings=20)


def test_train_floor_and_eval_from_the_command_line(tmp_path, omniglot_dir):
    common = ["--data-dir", str(omniglot_dir), "--validate-episodes", "10"]
    run, floor = tmp_path / "simclr", tmp_path / "floor"
    assert cli.main(["train", "--method", "simclr", "--steps", "2", "--steps-per-epoch", "2", "--batch-size", "16",
                     "--option", "hidden_units=[32]", "--option", "projection_units=16", "--output", str(run),
                     *common]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["labels_used"] is False and summary["labels_used_by_encoder"] is False
    assert summary["steps"] == 2 and summary["batch_size"] == 16 and len(summary["curve"]) == 1
    assert summary["views"]["rotation_degrees"] == 15.0  # the omniglot preset is recorded

    assert cli.main(["train", "--method", "byol", "--steps", "0", "--output", str(floor), *common]) == 0
    floor_summary = json.loads((floor / "train.json").read_text())
    assert floor_summary["steps"] == 0 and floor_summary["labels_used"] is False
    assert 20 < floor_summary["curve"][0]["validation_accuracy"] <= 100
    restored, _ = load_trained(floor)
    keras.utils.set_random_seed(0)
    untrained = mssl_tf.conv4()  # the same seed draws the same initial backbone
    images = tf.random.uniform([4, 28, 28, 1], seed=1)
    np.testing.assert_allclose(restored(images), untrained(images), atol=1e-6)

    records = tmp_path / "records"
    assert cli.main(["eval", str(run), "--data-dir", str(omniglot_dir), "--settings", "5w1s", "--episodes", "10",
                     "--split", "val", "--results-dir", str(records), "--run-name", "tiny"]) == 0
    record = json.loads((records / "tiny_5w1s.json").read_text())
    assert record["labels_used"] is False and record["method"] == "simclr"
    assert cli.main(["eval", str(run), "--data-dir", str(omniglot_dir), "--protocol", "knn", "--split", "val",
                     "--results-dir", str(records), "--run-name", "tiny"]) == 0
    knn = json.loads((records / "tiny_knn.json").read_text())
    # The record holds the protocol's own numbers for the trained encoder on the validation split.
    expected = knn_accuracy(load_trained(run)[0], omniglot.load_split("val", omniglot_dir))
    assert knn["protocol"] == "knn" and knn["method"] == "simclr" and knn["labels_used"] is False
    assert (knn["classes"], knn["scored"], knn["neighbors"]) == (expected["classes"], 10 * expected["classes"], 1)
    assert (knn["accuracy"], knn["ci95"]) == (expected["accuracy"], expected["ci95"])
