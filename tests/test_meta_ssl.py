"""Meta-SSL families: adaptation moves predictions toward the support labels, second-order meta-gradients match finite
differences, `.keras` round trips, adaptation curves, and the unsupervised training path end to end."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.evaluation import adaptation_curve
from mssl_tf.methods import MAML, ProtoNet
from mssl_tf.methods.meta_ssl import HyperNetwork, MemoryNetwork, adaptation_steps
from mssl_tf.methods.meta_ssl.memory import read_memory, write_memory
from mssl_tf.training import load_trained
from tests.conftest import central_differences


def identity_backbone(dimensions=4):
    inputs = keras.Input((dimensions,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def toy_task(ways=3, shots=2, dimensions=4, seed=0, separation=3.0):
    """Class c lives near separation·e_c; the queries are the support points slightly moved (a batch of one task)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(ways), shots)
    support = separation * np.eye(dimensions)[labels] + rng.normal(scale=0.5, size=(len(labels), dimensions))
    query = support + rng.normal(scale=0.2, size=support.shape)
    return {"support_images": tf.constant(support[None], tf.float32), "support_labels": tf.constant(labels[None]),
            "query_images": tf.constant(query[None], tf.float32), "query_labels": tf.constant(labels[None])}


def query_probabilities(model, batch, training=False):
    losses, logits = model.meta_batch_learn(batch, training=training)
    probabilities = tf.nn.softmax(logits[0]).numpy()
    return float(losses[0]), probabilities[np.arange(len(probabilities)), batch["query_labels"][0].numpy()]


def as_json(config):
    return json.loads(json.dumps(config))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# === Memory ===
def test_memory_read_and_write_match_hand_computation():
    keys = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    values = np.eye(2)[[0, 1, 1]]
    strengths, temperature, empty = np.array([0.5, 1.0, 2.0]), 3.0, 0.7
    queries = np.array([[0.8, 0.6]])
    weights = np.append(strengths * np.exp(temperature * queries @ keys.T)[0], np.exp(empty))
    weights /= weights.sum()
    expected = weights[:3] @ values + weights[3] / 2
    measured = read_memory(tf.constant(queries), tf.constant(keys), tf.constant(values), tf.constant(strengths),
                           temperature, empty)
    np.testing.assert_allclose(measured[0], expected, rtol=1e-6)

    gates = np.array([0.9, 0.5, 0.8])
    first = gates * (1 - 1 / 2)  # an empty memory reads uniform: every example is half a surprise
    reads = []
    for slot in range(3):  # second pass: each example read from the others' slots
        others = [i for i in range(3) if i != slot]
        w = np.append(first[others] * np.exp(temperature * keys[others] @ keys[slot]), np.exp(empty))
        w /= w.sum()
        reads.append((w[:2] @ values[others] + w[2] / 2)[np.argmax(values[slot])])
    expected_strengths = first + gates * (1 - np.array(reads))
    measured = write_memory(tf.constant(keys), tf.constant(values), tf.constant(gates), 2, temperature, empty)
    np.testing.assert_allclose(measured, expected_strengths, rtol=1e-6)


def test_writing_the_support_set_moves_queries_to_their_labels():
    model = MemoryNetwork(identity_backbone())
    batch = toy_task()
    with adaptation_steps(model, 0):
        empty_loss, empty_probabilities = query_probabilities(model, batch)
    assert empty_loss == pytest.approx(math.log(3), rel=1e-5)
    np.testing.assert_allclose(empty_probabilities, 1 / 3, rtol=1e-5)
    written_loss, written_probabilities = query_probabilities(model, batch)
    assert written_loss < 0.5 * empty_loss
    assert (written_probabilities > 0.5).all(), "every query must move to its support label"
    # One more write of a class-0 example raises class 0's probability for a query beside it.
    without_last = {key: batch[key][:, 1:] if key.startswith("support") else batch[key][:, :1] for key in batch}
    _, before = query_probabilities(model, without_last)
    _, after = query_probabilities(model, {**without_last, **{key: batch[key] for key in batch
                                                             if key.startswith("support")}})
    assert after[0] > before[0]


# === Hyper-network ===
def test_untrained_hypernetwork_emits_the_prototype_classifier():
    model = HyperNetwork(identity_backbone(), hidden_units=(8,))
    batch = toy_task()
    loss, probabilities = query_probabilities(model, batch)
    support, labels = batch["support_images"][0].numpy(), batch["support_labels"][0].numpy()
    prototypes = np.stack([support[labels == c].mean(0) for c in range(3)])
    query = batch["query_images"][0].numpy()
    expected = softmax(2 * query @ prototypes.T - (prototypes**2).sum(1))  # −|q − p|² + |q|²
    np.testing.assert_allclose(probabilities, expected[np.arange(6), labels], rtol=1e-4)
    assert loss < 0.5 * math.log(3) and (probabilities > 0.5).all()


def test_hypernetwork_learns_its_step_sizes_only_when_meta_training_takes_steps():
    learned = lambda model: {w.name for w in model.trainable_weights if "inner_learning_rate" in w.name}  # noqa: E731
    assert learned(HyperNetwork(mssl_tf.conv4(), inner_steps=0)) == set()
    assert learned(HyperNetwork(mssl_tf.conv4(), inner_steps=1)) == {"inner_learning_rate_weights",
                                                                       "inner_learning_rate_biases"}


def test_hypernetwork_inner_steps_lower_support_and_query_loss():
    keras.utils.set_random_seed(2)
    model = HyperNetwork(identity_backbone(), hidden_units=(8,), inner_learning_rate=0.05)
    rng = np.random.default_rng(0)
    model.generator.set_weights([rng.normal(scale=1.0, size=w.shape) for w in model.generator.get_weights()])
    batch = toy_task(separation=1.0)
    support_as_query = {**batch, "query_images": batch["support_images"], "query_labels": batch["support_labels"]}
    support_losses, query_losses, probabilities = [], [], []
    for steps in (0, 1, 3):
        with adaptation_steps(model, steps):
            support_losses.append(query_probabilities(model, support_as_query)[0])
            loss, probability = query_probabilities(model, batch)
        query_losses.append(loss)
        probabilities.append(probability)
    assert support_losses[0] > 0.1, "the emitted head must leave something to adapt"
    assert support_losses[0] > support_losses[1] > support_losses[2]
    assert query_losses[0] > query_losses[1] > query_losses[2]
    # The true labels gain probability on average and for the hardest query.
    assert probabilities[2].mean() > probabilities[0].mean() and probabilities[2].min() > probabilities[0].min()


# === Optimization-based: MAML's inner loop on a self-supervised task ===
def test_maml_inner_steps_move_queries_to_their_support_labels():
    keras.utils.set_random_seed(3)
    model = MAML(identity_backbone(), ways=3, inner_steps=1, inner_learning_rate=0.5, task_batching=False)
    batch = toy_task()
    with adaptation_steps(model, 0):
        loss_before, before = query_probabilities(model, batch)
    loss_after, after = query_probabilities(model, batch)
    assert loss_after < loss_before
    assert after.mean() > before.mean() and after.min() > before.min()


# === Second-order meta-gradients against central finite differences (float64) ===
def check_meta_gradient(model, batch, first_order_model):
    def meta_loss():
        return tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0])

    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = meta_loss()
    analytic = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, variables)])
    numeric = central_differences(meta_loss, variables, 1e-5)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    first_order_model.set_weights(model.get_weights())
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(first_order_model.meta_batch_learn(batch, training=True)[0])
    first = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, first_order_model.trainable_variables)])
    assert np.abs(first - numeric).max() > 1e-4, "the check must see the second-order term"


def test_maml_second_order_meta_gradient_matches_finite_differences(float64):
    def tiny_maml(first_order):
        keras.utils.set_random_seed(5)
        inputs = keras.Input((2, 2, 1))
        features = keras.layers.Dense(3, activation="tanh")(keras.layers.Flatten()(inputs))
        return MAML(keras.Model(inputs, features), ways=2, inner_steps=2, inner_learning_rate=0.7,
                    first_order=first_order)

    rng = np.random.default_rng(0)
    batch = {"support_images": tf.constant(rng.normal(size=(2, 4, 2, 2, 1))),
             "support_labels": tf.constant([[0, 1, 0, 1]] * 2),
             "query_images": tf.constant(rng.normal(size=(2, 6, 2, 2, 1))),
             "query_labels": tf.constant([[0, 1, 1, 0, 1, 0]] * 2)}
    check_meta_gradient(tiny_maml(False), batch, tiny_maml(True))


def test_hypernetwork_second_order_meta_gradient_matches_finite_differences(float64):
    def tiny_hypernetwork(first_order):
        keras.utils.set_random_seed(6)
        inputs = keras.Input((3,))
        backbone = keras.Model(inputs, keras.layers.Dense(2, activation="tanh")(inputs))
        model = HyperNetwork(backbone, hidden_units=(3,), inner_steps=2, inner_learning_rate=0.8,
                             first_order=first_order)
        rng = np.random.default_rng(1)
        model.generator.set_weights([rng.normal(scale=0.5, size=w.shape) for w in model.generator.get_weights()])
        return model

    rng = np.random.default_rng(2)
    batch = {"support_images": tf.constant(rng.normal(size=(1, 4, 3))), "support_labels": tf.constant([[0, 1, 0, 1]]),
             "query_images": tf.constant(rng.normal(size=(1, 4, 3))), "query_labels": tf.constant([[1, 0, 0, 1]])}
    check_meta_gradient(tiny_hypernetwork(False), batch, tiny_hypernetwork(True))


# === Serialization ===
@pytest.fixture(scope="module")
def pattern_classes():
    """uint8 `[8 classes, 6 drawings, 28, 28]`: a random glyph per class, each drawing with a few pixels changed."""
    rng = np.random.default_rng(0)
    glyphs = (rng.random((8, 1, 28, 28)) < 0.2) * 255
    flips = rng.random((8, 6, 28, 28)) < 0.02
    return np.where(flips, 255 - glyphs, glyphs).astype(np.uint8)


@pytest.mark.parametrize("model_fn", [
    lambda: MemoryNetwork(mssl_tf.conv4(), key_units=32, write_passes=2, evaluation_write_passes=3, temperature=5.0),
    lambda: HyperNetwork(mssl_tf.conv4(), hidden_units=(16,), inner_steps=1, evaluation_inner_steps=2,
                         first_order=True),
], ids=["memory", "hypernetwork"])
def test_keras_round_trip_keeps_the_learned_adaptation(model_fn, pattern_classes, tmp_path):
    keras.utils.set_random_seed(7)
    model = model_fn()
    rng = np.random.default_rng(3)
    model.set_weights([w + rng.normal(scale=0.05, size=w.shape) for w in model.get_weights()])  # "trained" state
    batch = next(iter(episode_dataset(pattern_classes, EpisodeSpec(4, 2, 2), meta_batch=2, seed=1)))
    model.save(tmp_path / "model.keras")
    restored, _ = load_trained(tmp_path / "model.keras")
    assert type(restored) is type(model) and as_json(restored.get_config()) == as_json(model.get_config())
    for training in (False, True):
        np.testing.assert_allclose(restored.meta_batch_learn(batch, training)[1],
                                   model.meta_batch_learn(batch, training)[1], rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# === Adaptation curves ===
def test_adaptation_curve_starts_at_chance_for_an_empty_memory(pattern_classes):
    keras.utils.set_random_seed(8)
    model = MemoryNetwork(mssl_tf.conv4())
    curve = adaptation_curve(model, pattern_classes, EpisodeSpec(4, 1, 3), steps=(0, 1), episodes=10, tasks_per_call=5)
    assert [point["steps"] for point in curve] == [0, 1] and curve[0]["episodes"] == 10
    assert curve[0]["accuracy"] == 25.0 and curve[0]["ci95"] == 0.0  # an empty memory predicts every class alike
    assert curve[1]["accuracy"] > 60.0
    assert model.evaluation_write_passes == 1, "the model's own setting must be restored"
    hypernetwork_curve = adaptation_curve(HyperNetwork(mssl_tf.conv4()), pattern_classes, EpisodeSpec(4, 1, 3),
                                          steps=(0, 2), episodes=10, tasks_per_call=5)
    assert hypernetwork_curve[0]["accuracy"] > 60.0
    with pytest.raises(ValueError, match="adapts in one fixed way"):
        adaptation_curve(ProtoNet(mssl_tf.conv4()), pattern_classes, EpisodeSpec(4, 1, 3), episodes=5)


# === The unsupervised training path through the command line ===
def test_unsupervised_training_records_no_labels_and_init_from_copies_the_backbone(tmp_path, omniglot_dir):
    from mssl_tf import cli
    from mssl_tf.training.model import initialize_backbone

    common = ["--data-dir", str(omniglot_dir), "--ways", "5", "--shots", "1", "--queries", "2", "--steps", "2",
              "--steps-per-epoch", "2", "--validate-episodes", "10"]
    encoder = tmp_path / "encoder"
    assert cli.main(["train", "--method", "protonet", "--tasks", "augmentation", "--output", str(encoder),
                     *common]) == 0
    summary = json.loads((encoder / "train.json").read_text())
    assert summary["labels_used"] is False and summary["tasks"] == "augmentation"

    run = tmp_path / "memory"
    assert cli.main(["train", "--method", "memory", "--tasks", "mixture", "--init-from", str(encoder),
                     "--output", str(run), *common]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["labels_used"] is False and summary["init_from"]["labels_used"] is False
    from mssl_tf.training.records import pretraining_seconds

    encoder_seconds = json.loads((encoder / "train.json").read_text())["train_seconds"]
    assert summary["init_from"]["train_seconds"] == encoder_seconds > 0
    assert pretraining_seconds(summary) == encoder_seconds
    older = {"init_from": {"path": str(encoder / "model.keras"), "sha256": "a"}}  # a train.json before these fields
    assert pretraining_seconds({**older, "cluster_encoder": older["init_from"]}) == encoder_seconds  # counted once

    records = tmp_path / "records"
    assert cli.main(["eval", str(run), "--data-dir", str(omniglot_dir), "--split", "val", "--settings", "5w1s",
                     "--episodes", "10", "--adaptation-steps", "0,1", "--results-dir", str(records)]) == 0
    record = json.loads((records / "memory_5w1s_adaptation.json").read_text())
    assert [point["steps"] for point in record["adaptation"]] == [0, 1]
    assert record["adaptation"][0]["accuracy"] == 20.0 and record["labels_used"] is False
    assert record["pretraining_seconds"] == encoder_seconds

    source, _ = load_trained(encoder)
    target = MemoryNetwork(mssl_tf.conv4())
    initialize_backbone(target, encoder)
    for mine, theirs in zip(target.backbone.get_weights(), source.backbone.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    labeled = tmp_path / "labeled"
    labeled.mkdir()
    source.save(labeled / "model.keras")
    (labeled / "train.json").write_text(json.dumps({"labels_used": True}))
    from mssl_tf.training import TrainConfig
    from mssl_tf.training.records import task_summary as unsupervised_summary

    assert unsupervised_summary(TrainConfig(tasks="augmentation", init_from=str(labeled)))["labels_used"] is True
    assert unsupervised_summary(TrainConfig(tasks="augmentation", init_from=str(encoder)))["labels_used"] is False


def test_sequential_writes_are_error_driven_from_the_first_pass():
    """Hand-derived: example i reads the slots written before it; a redundant example is written weakly."""
    from mssl_tf.methods.meta_ssl.memory import write_memory_sequentially

    keys = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # example 1 repeats example 0 (same class)
    values = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    gates, temperature, empty = np.array([0.9, 0.9, 0.9]), 3.0, 0.0

    def read(slot, strengths):
        others = [i for i in range(3) if i != slot]
        w = np.append(strengths[others] * np.exp(temperature * keys[others] @ keys[slot]), np.exp(empty))
        w /= w.sum()
        return (w[:2] @ values[others] + w[2] / 2)[np.argmax(values[slot])]

    strengths = np.zeros(3)
    for _ in range(2):
        for slot in range(3):
            strengths[slot] += gates[slot] * (1 - read(slot, strengths))
    measured = write_memory_sequentially(tf.constant(keys), tf.constant(values), tf.constant(gates), 2,
                                         temperature, empty)
    np.testing.assert_allclose(measured, strengths, rtol=1e-6)
    one_pass = write_memory_sequentially(tf.constant(keys), tf.constant(values), tf.constant(gates), 1,
                                         temperature, empty).numpy()
    assert one_pass[1] < 0.5 * one_pass[0], "the repeated example is already predicted: a weak write"
    parallel = write_memory(tf.constant(keys), tf.constant(values), tf.constant(gates), 1, temperature, empty)
    np.testing.assert_allclose(parallel, gates * 0.5)  # the parallel first pass: equal strengths, gate · (1 − 1/2)


def test_sequential_write_order_trains_and_round_trips(tmp_path):
    model = MemoryNetwork(identity_backbone(), write_order="sequential")
    batch = toy_task()
    model.compile(keras.optimizers.Adam(1e-2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0])
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(gradient is not None for gradient in gradients), "gradients flow through the write loop"
    model.save(tmp_path / "memory.keras")
    reloaded = keras.saving.load_model(tmp_path / "memory.keras")
    assert reloaded.write_order == "sequential"
    np.testing.assert_allclose(reloaded.meta_batch_learn(batch, training=False)[1],
                               model.meta_batch_learn(batch, training=False)[1], rtol=1e-6)
    with pytest.raises(ValueError, match="write_order"):
        MemoryNetwork(identity_backbone(), write_order="random")
