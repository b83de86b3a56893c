"""MAML's shared head (UNICORN-MAML, Ye & Chao, ICLR 2022): the meta-gradient of the replicated w and b against
central differences, permutation invariance, any width after training (in-process and served), round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.backbones import conv4
from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.evaluation import evaluate
from mssl_tf.export import export_model, read_metadata
from mssl_tf.methods import IMAML, build_method
from mssl_tf.training.evaluate import _skips
from tests.conftest import central_differences, labelled_classes
from tests.test_maml import conv_batch


def pixel_batch(tasks=2, ways=3, shots=2, queries=3, seed=0):
    """Tasks of 2x2 'images' (4 features once flattened) with random values; labels 0..ways-1."""
    rng = np.random.default_rng(seed)
    dtype = keras.config.floatx()
    return {
        "support_images": tf.constant(rng.normal(size=(tasks, ways * shots, 2, 2, 1)), dtype),
        "support_labels": tf.constant(np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)), tf.int32),
        "query_images": tf.constant(rng.normal(size=(tasks, ways * queries, 2, 2, 1)), dtype),
        "query_labels": tf.constant(rng.integers(0, ways, size=(tasks, ways * queries)), tf.int32),
    }


def flat_gradient(model, batch):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0])
    return np.concatenate([np.ravel(g) for g in tape.gradient(loss, model.trainable_variables)])


@pytest.mark.parametrize("task_batching", [True, False])
def test_second_order_meta_gradient_through_the_replicated_head_equals_central_differences(float64, task_batching):
    """One inner step from W_0 = [w, ..., w] on a tanh layer and the head: d(query loss)/d(every weight).

    The loss does not depend on w and b at all (softmax cross-entropy is invariant to adding one number to every
    logit of an example, and each inner gradient of the body sums (p - y) over the classes to zero), so their
    meta-gradient is exactly zero: the sum over the N copies cancels what each copy receives. A replication whose
    gradient reached one copy only, or none, would differ from the numeric derivative.
    """
    backbone = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(3, activation="tanh")])
    options = dict(ways=5, inner_steps=1, inner_learning_rate=0.7, head="shared", task_batching=task_batching)
    model = build_method("maml", backbone, **options)
    assert model.batched == task_batching  # this backbone runs on either path
    model.classifier.kernel.assign(np.random.default_rng(2).normal(size=(3, 1)))
    model.classifier.bias.assign([0.3])
    batch = pixel_batch()  # 3-way tasks on a head trained as 5-way

    analytic = flat_gradient(model, batch)
    numeric = central_differences(
        lambda: tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0]), model.trainable_variables, 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    head = [v.path for v in model.trainable_variables].index(model.classifier.kernel.path)
    np.testing.assert_allclose(analytic[-4:], 0, atol=1e-12)  # w (3) and b (1): the shift invariance
    assert head == len(model.trainable_variables) - 2 and np.abs(analytic[:-4]).max() > 1e-2
    first_order = build_method("fomaml", backbone, **options)
    first_order.set_weights(model.get_weights())
    assert np.abs(flat_gradient(first_order, batch) - numeric).max() > 1e-3  # the second-order term is visible


@pytest.mark.parametrize("head", ["shared", "per_class"])
def test_relabelling_the_classes_permutes_the_query_logits(head):
    keras.utils.set_random_seed(5)
    model = build_method("maml", conv4(filters=4), ways=4, inner_steps=2, inner_learning_rate=0.3, head=head)
    batch = conv_batch(tasks=2, ways=4)
    permutation = np.array([2, 0, 3, 1])  # class c is called permutation[c]
    relabelled = {**batch, "support_labels": tf.gather(permutation, batch["support_labels"]),
                  "query_labels": tf.gather(permutation, batch["query_labels"])}
    logits = model.meta_batch_learn(batch, training=False)[1].numpy()
    permuted = model.meta_batch_learn(relabelled, training=False)[1].numpy()
    if head == "shared":
        np.testing.assert_allclose(permuted[..., permutation], logits, rtol=1e-5, atol=1e-5)
    else:  # control: a learned row per class is not permutation-invariant, the comparison sees it
        assert np.abs(permuted[..., permutation] - logits).max() > 1e-2


def test_task_paths_agree_on_a_wider_task_than_trained():
    """20-way tasks on a 5-way shared head: grouped convolutions and stateless_call give the same numbers."""
    keras.utils.set_random_seed(6)
    batched = build_method("metasgd", conv4(filters=4), ways=5, inner_steps=2, inner_learning_rate=0.1,
                           head="shared")
    per_task = build_method("metasgd", conv4(filters=4), ways=5, inner_steps=2, inner_learning_rate=0.1,
                            head="shared", task_batching=False)
    per_task.set_weights(batched.get_weights())
    batch = conv_batch(tasks=2, ways=20, shots=1, queries=1)
    (batched_losses, batched_logits), (losses, logits) = (
        m.meta_batch_learn(batch, training=True) for m in (batched, per_task))
    assert batched_logits.shape == (2, 20, 20)
    np.testing.assert_allclose(batched_logits, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(batched_losses, losses, rtol=1e-4, atol=1e-5)


def test_reptile_moves_w_towards_the_mean_of_its_adapted_copies():
    keras.utils.set_random_seed(7)
    model = build_method("reptile", conv4(filters=4), ways=5, inner_steps=1, inner_learning_rate=0.1, head="shared",
                         adapt="head")
    model.compile(keras.optimizers.SGD(1.0))  # the paper's update: theta <- mean_t phi_t
    batch = conv_batch(tasks=2, ways=3)
    images = tf.concat([batch["support_images"], batch["query_images"]], axis=1)
    labels = tf.concat([batch["support_labels"], batch["query_labels"]], axis=1)
    fast, _ = model.adapt_tasks(images, labels, 1, batch["query_images"], first_order=True)
    kernel = fast[model.classifier.kernel.path].numpy()  # [tasks, d, 3]
    assert kernel.shape[-1] == 3 and np.abs(kernel[..., 0] - kernel[..., 1]).max() > 1e-4  # the copies differ
    model.train_step(batch)
    np.testing.assert_allclose(model.classifier.kernel.numpy(), kernel.mean(axis=(0, 2))[:, None], rtol=1e-5,
                               atol=1e-6)


def test_imaml_refuses_a_shared_head_and_says_why():
    with pytest.raises(ValueError, match="imaml supports only head='per_class'.*CG solution summed"):
        IMAML(conv4(filters=4), ways=5, head="shared")


@pytest.fixture(scope="module")
def trained_five_way():
    """A shared-head MAML after two 5-way meta-training steps on synthetic classes."""
    keras.utils.set_random_seed(8)
    model = build_method("maml", conv4(filters=4), ways=5, inner_steps=1, inner_learning_rate=0.4, head="shared")
    model.compile(keras.optimizers.Adam(1e-2))
    images = labelled_classes(classes=24, drawings=4)
    model.fit(episode_dataset(images, EpisodeSpec(5, 1, 2), meta_batch=2, seed=1), steps_per_epoch=2, verbose=0)
    return model, images


def test_a_five_way_model_scores_twenty_way_episodes(trained_five_way):
    model, images = trained_five_way
    assert model.few_shot_ways is None and not _skips(model, 20, 1)
    result = evaluate(model, images, EpisodeSpec(20, 1, 2), episodes=2, tasks_per_call=2)
    assert result["ways"] == 20 and result["episodes"] == 2 and 0 <= result["accuracy"] <= 100
    per_class = build_method("maml", conv4(filters=4), ways=5)
    assert _skips(per_class, 20, 1) and not _skips(per_class, 5, 1)


def twenty_way_task(images):
    support = images[:20, 0, :, :, np.newaxis]
    query = images[:20, 1:3, :, :, np.newaxis].reshape(40, 28, 28, 1)
    return support, np.arange(20, dtype=np.int32), query


def test_served_few_shot_of_any_width_equals_in_process(trained_five_way, tmp_path):
    model, images = trained_five_way
    version = export_model(model, tmp_path, "maml_shared", warmup=False)
    assert read_metadata(version)["few_shot_adaptation"]["fixed_ways"] is None
    loaded = tf.saved_model.load(str(version))
    for ways in (20, 3):
        support, labels, query = twenty_way_task(images)
        support, labels = support[:ways], labels[:ways]
        served = loaded.signatures["few_shot"](support_images=tf.constant(support), support_labels=tf.constant(labels),
                                               query_images=tf.constant(query))["logits"].numpy()
        in_process = model.few_shot_logits(tf.constant(support / 255.0, tf.float32), tf.constant(labels),
                                           tf.constant(query / 255.0, tf.float32)).numpy()
        assert served.shape == (40, ways)
        np.testing.assert_allclose(served, in_process, rtol=1e-4, atol=1e-4)


def test_keras_round_trip_keeps_the_shared_head(trained_five_way, tmp_path):
    model, images = trained_five_way
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.head == "shared" and restored.get_config()["head"] == "shared"
    for original, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(original.numpy(), loaded.numpy())
    support, labels, query = (tf.constant(x) for x in twenty_way_task(images))
    as_float = lambda x: tf.cast(x, tf.float32) / 255.0  # noqa: E731
    np.testing.assert_array_equal(restored.few_shot_logits(as_float(support), labels, as_float(query)),
                                  model.few_shot_logits(as_float(support), labels, as_float(query)))


def test_command_line_trains_five_way_and_scores_twenty_way(tmp_path, omniglot_dir):
    """`--option head=shared` reaches the model and its record; `mssl-tf eval` then scores 20-way settings."""
    from mssl_tf import cli, results

    run = tmp_path / "run"
    assert cli.main([
        "train", "--method", "maml", "--option", "head=shared", "--data-dir", str(omniglot_dir), "--ways", "5",
        "--shots", "1", "--queries", "1", "--meta-batch", "2", "--steps", "2", "--steps-per-epoch", "2",
        "--inner-steps", "1", "--validate-episodes", "2", "--output", str(run),
    ]) == 0
    assert json_of(run / "train.json")["config"]["method_options"]["head"] == "shared"
    records_dir = tmp_path / "records"
    assert cli.main(["eval", str(run), "--data-dir", str(omniglot_dir), "--settings", "5w1s,20w1s", "--episodes", "2",
                     "--results-dir", str(records_dir), "--run-name", "shared"]) == 0
    records = results.read_records(records_dir)
    assert {r["ways"] for r in records} == {5, 20}
    assert all(r["method_options"]["head"] == "shared" for r in records)


def json_of(path):
    import json

    return json.loads(path.read_text())
