"""The memory network's persistent memory (issue 12): K learned (key, value) slots that carry across tasks, read by
every embedding before the episode memory. The read by hand, its effect, training writes it, round trip, zoo card."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf import zoo
from mssl_tf.methods.meta_ssl.memory import MemoryNetwork, read_persistent
from tests.test_meta_ssl import identity_backbone, toy_task


def test_the_persistent_read_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    features, keys, values = rng.normal(size=(5, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    temperature = 2.5
    cosine = (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
        keys / np.linalg.norm(keys, axis=1, keepdims=True)).T
    attention = np.exp(temperature * cosine)
    attention /= attention.sum(axis=1, keepdims=True)
    expected = features + attention @ values
    measured = read_persistent(tf.constant(features), tf.constant(keys), tf.constant(values), temperature)
    np.testing.assert_allclose(measured, expected, rtol=1e-10)


def persistent_model(slots=3):
    keras.utils.set_random_seed(1)
    return MemoryNetwork(identity_backbone(), persistent_slots=slots)


def test_the_read_refines_support_and_query_before_the_episode_memory():
    """Untrained (values zero) the model classifies as without slots; with values it classifies the refined
    embeddings: the same logits as a slot-less model given `read_persistent` of the features."""
    model, plain = persistent_model(), MemoryNetwork(identity_backbone())
    plain.set_weights([v.numpy() for v in model.weights if "persistent" not in v.path])
    batch = toy_task()
    np.testing.assert_array_equal(model.meta_batch_learn(batch, training=False)[1],
                                  plain.meta_batch_learn(batch, training=False)[1])
    model.persistent_values.assign(np.random.default_rng(2).normal(size=(3, 4)))
    refined = {key: (read_persistent(value[0], model.persistent_keys, model.persistent_values,
                                     tf.exp(model.persistent_log_temperature))[None] if "images" in key else value)
               for key, value in batch.items()}
    logits = model.meta_batch_learn(batch, training=False)[1]
    np.testing.assert_allclose(logits, plain.meta_batch_learn(refined, training=False)[1], rtol=1e-5, atol=1e-6)
    assert np.abs(logits - plain.meta_batch_learn(batch, training=False)[1]).max() > 1e-3


def test_a_fit_step_writes_the_slots_and_a_round_trip_keeps_them(tmp_path):
    model = persistent_model()
    model.compile(keras.optimizers.Adam(1e-2))
    keys, values = model.persistent_keys.numpy(), model.persistent_values.numpy()
    dataset = tf.data.Dataset.from_tensors(toy_task()).repeat()
    model.fit(dataset, steps_per_epoch=2, verbose=0)  # step 1 writes the values (the keys' gradient is 0 while
    assert np.abs(model.persistent_values.numpy() - values).max() > 1e-4  # the values are), step 2 the keys
    assert np.abs(model.persistent_keys.numpy() - keys).max() > 1e-4
    model.save(tmp_path / "memory.keras")
    reloaded = keras.saving.load_model(tmp_path / "memory.keras")
    assert reloaded.persistent_slots == 3
    for name in ("persistent_keys", "persistent_values", "persistent_log_temperature"):
        np.testing.assert_array_equal(getattr(reloaded, name).numpy(), getattr(model, name).numpy())
    batch = toy_task(seed=4)
    np.testing.assert_array_equal(reloaded.meta_batch_learn(batch, training=False)[1],
                                  model.meta_batch_learn(batch, training=False)[1])


def test_without_slots_the_model_and_its_zoo_card_are_unchanged():
    assert not any("persistent" in v.path for v in MemoryNetwork(identity_backbone()).weights)
    model = zoo.load("memory-network-augmentation-tasks-conv4-omniglot-unsupervised")
    assert model.persistent_slots == 0 and not hasattr(model, "persistent_keys")


@pytest.mark.parametrize("slots", [0, 2])
def test_config_round_trips(slots):
    config = MemoryNetwork(identity_backbone(), persistent_slots=slots).get_config()
    assert MemoryNetwork.from_config(config).persistent_slots == slots
