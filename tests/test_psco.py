"""PsCo (Jang, Hwang, Shin & Kim, ICLR 2023): its blocks by hand (Sinkhorn-Knopp, top-K shots, the few-shot
supervised contrastive loss), its loss as the composition of those blocks, the momentum network and the queue after
real steps, and a short fit that learns on a known-easy synthetic set."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf.data.views import multi_view_dataset
from mssl_tf.losses import sinkhorn, supervised_contrastive, top_assignments
from mssl_tf.methods.ssl import PsCo


def numpy_sinkhorn(scores, epsilon, iterations):
    """Sinkhorn-Knopp as diagonal scalings: A = N·diag(u) exp(S/ε) diag(v), columns (v) then rows (u) each time."""
    kernel = np.exp(np.asarray(scores, np.float64) / epsilon)
    samples, candidates = kernel.shape
    u = np.full(samples, 1.0)
    for _ in range(iterations):
        v = (1.0 / candidates) / (kernel.T @ u)
        u = (1.0 / samples) / (kernel @ v)
    return samples * u[:, None] * kernel * v[None, :]


def unit(degrees):
    radians = np.deg2rad(np.asarray(degrees, np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=-1).astype(np.float32)


def identity_backbone(dimension=4):
    inputs = keras.Input((dimension,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


# === Sinkhorn-Knopp ===
def test_sinkhorn_converges_to_uniform_marginals_and_matches_numpy_on_three_by_four():
    scores = np.array([[0.9, 0.1, -0.3, 0.5], [0.8, 0.7, -0.9, 0.0], [0.2, -0.5, 0.6, 0.4]], np.float32)
    assignment = sinkhorn(scores, epsilon=0.5, iterations=3).numpy()
    np.testing.assert_allclose(assignment, numpy_sinkhorn(scores, 0.5, 3), rtol=1e-5)
    np.testing.assert_allclose(assignment.sum(axis=1), 1.0, rtol=1e-5)  # rows are normalized last
    # Not a row softmax: the column constraint moved mass visibly.
    softmax = np.exp(scores / 0.5) / np.exp(scores / 0.5).sum(axis=1, keepdims=True)
    assert np.abs(assignment - softmax).max() > 0.05
    # Iterated to convergence, both marginals are uniform: rows 1, columns N/M.
    scores = np.random.default_rng(0).uniform(-1, 1, [6, 8]).astype(np.float32)
    converged = sinkhorn(scores, epsilon=0.3, iterations=300).numpy()
    np.testing.assert_allclose(converged.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(converged.sum(axis=0), 6 / 8, rtol=1e-3)
    assert np.abs(scores.argmax(axis=1) - converged.argmax(axis=1)).sum() > 0  # equal partition reassigned someone


def test_top_assignments_pick_the_largest_entries_of_each_row():
    assignment = np.array([[0.1, 0.5, 0.3, 0.1], [0.6, 0.05, 0.05, 0.3]], np.float32)
    np.testing.assert_array_equal(top_assignments(assignment, 2), [[1, 2], [0, 3]])
    np.testing.assert_array_equal(top_assignments(assignment, 1), [[1], [0]])


def test_pseudo_task_gives_each_key_its_transported_queue_entry_not_its_nearest():
    # Keys at 0°, 20°, 170°; queue entries at 0°, 60°, 180°. Key 1's nearest entry is 0° (cos 20° = .94 > cos 40°), but
    # under an equal partition (N = M = 3: a permutation) the best total similarity is 0°→0°, 20°→60°, 170°→180°
    # (2.75 against 2.43 for swapping the first two), so key 1's shot is the 60° entry.
    model = PsCo(identity_backbone(2), queue_size=3, shots=1, sinkhorn_iterations=100, hidden_units=[4],
                 projection_units=2)
    queue = unit([0, 60, 180])
    model.queue.assign(3.0 * queue)  # entries are normalized before use
    support, labels = model.pseudo_task(tf.constant(2.0 * unit([0, 20, 170])))
    np.testing.assert_allclose(support, queue, atol=1e-6)
    np.testing.assert_array_equal(labels, [0, 1, 2])
    # Two shots each: the labels repeat per key, the support rows are queue entries.
    model = PsCo(identity_backbone(2), queue_size=3, shots=2, hidden_units=[4], projection_units=2)
    model.queue.assign(queue)
    support, labels = model.pseudo_task(tf.constant(unit([0, 20, 170])))
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    assert all(np.isclose(np.abs(queue @ row), 1.0).any() for row in support.numpy())


# === Few-shot supervised contrastive loss ===
def test_supervised_contrastive_loss_by_hand():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    support = rng.normal(size=(6, 4)).astype(np.float32)
    support_labels = np.array([0, 0, 1, 1, 2, 2])
    query_labels = np.array([2, 0, 1])
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = support / np.linalg.norm(support, axis=1, keepdims=True)
    logits = q @ s.T / 0.5
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.mean([-log_probabilities[i, support_labels == query_labels[i]].mean() for i in range(3)])
    loss = supervised_contrastive(queries, query_labels, support, support_labels, temperature=0.5)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    unmasked = np.mean([-log_probabilities[i].mean() for i in range(3)])
    assert abs(expected - unmasked) > 0.05
    support = tf.constant(support)
    with tf.GradientTape() as tape:
        tape.watch(support)
        loss = supervised_contrastive(queries, query_labels, support, support_labels)
    assert tape.gradient(loss, support) is None  # momentum features: no gradient


# === The method: loss composition, momentum network, queue ===
def numpy_model_loss(model, views):
    """PsCo's loss from the model's layers and numpy: Sinkhorn, top-1 shots, SupCon, InfoNCE (training=False)."""
    def normalize(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    online = model.predictor(model.projector(model.backbone(views[:, 0]))).numpy().astype(np.float64)
    keys = model.key_projector(model.key_backbone(views[:, 1])).numpy().astype(np.float64)
    q, k, queue = normalize(online), normalize(keys), normalize(model.queue.numpy().astype(np.float64))
    assignment = numpy_sinkhorn(k @ queue.T, model.sinkhorn_epsilon, model.sinkhorn_iterations)
    shots = queue[assignment.argmax(axis=1)]
    logits = q @ shots.T / model.support_temperature
    supcon = np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits))
    moco_logits = np.concatenate([(q * k).sum(axis=1, keepdims=True), q @ queue.T], axis=1) / model.temperature
    infonce = np.mean(np.log(np.exp(moco_logits).sum(axis=1)) - moco_logits[:, 0])
    return supcon + infonce, supcon


def test_loss_is_supervised_contrast_on_the_pseudo_task_plus_moco():
    keras.utils.set_random_seed(0)
    model = PsCo(identity_backbone(), queue_size=16, temperature=0.3, support_temperature=0.7, sinkhorn_epsilon=0.1,
                 hidden_units=[8], projection_units=4)
    model.compile(keras.optimizers.SGD(0.1))  # the key permutation is keyed by the optimizer's step
    views = np.random.default_rng(2).normal(size=(5, 2, 4)).astype(np.float32)
    loss, features = model.compute_ssl_loss(tf.unstack(views, axis=1), training=False)
    expected, supcon = numpy_model_loss(model, views)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    assert supcon > 0.05
    np.testing.assert_allclose(features, views[:, 0], atol=1e-6)


def test_step_updates_the_momentum_network_then_enqueues_its_keys_of_the_second_view():
    keras.utils.set_random_seed(0)
    model = PsCo(identity_backbone(), momentum=0.8, queue_size=12, hidden_units=[8], projection_units=4)
    model.compile(keras.optimizers.SGD(0.5))
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(4, 2, 4)).astype(np.float32) for _ in range(2)]
    model.fit(tf.data.Dataset.from_tensors({"views": batches[0]}), epochs=1, steps_per_epoch=1, verbose=0)
    online = [source.numpy() for source, _ in model.key_pairs]
    target = [copy.numpy() for _, copy in model.key_pairs]
    assert any(not np.allclose(a, b) for a, b in zip(online, target))  # the online network has moved
    old_queue = model.queue.numpy().copy()
    # Keys of the second step: the key network after its EMA update, on view 1, in inference of nothing else.
    twin = PsCo.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    for (_, variable), old_target, old_online in zip(twin.key_pairs, target, online):
        variable.assign(0.8 * old_target + 0.2 * old_online)
    expected_keys = twin.key_projector(twin.key_backbone(batches[1][:, 1]), training=True).numpy()
    model.fit(tf.data.Dataset.from_tensors({"views": batches[1]}), epochs=1, steps_per_epoch=1, verbose=0)
    for (_, variable), old_target, old_online in zip(model.key_pairs, target, online):
        np.testing.assert_allclose(variable.numpy(), 0.8 * old_target + 0.2 * old_online, rtol=1e-5, atol=1e-6)
    queue = model.queue.numpy()
    np.testing.assert_allclose(queue[4:], old_queue[:8])
    np.testing.assert_allclose(queue[:4], expected_keys / np.linalg.norm(expected_keys, axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-5)


def test_heads_evaluation_is_the_papers_cosine_prototypes_of_projections_against_predictions():
    keras.utils.set_random_seed(0)
    model = PsCo(identity_backbone(), evaluation="heads", support_temperature=0.5, hidden_units=[8],
                 projection_units=4)
    rng = np.random.default_rng(4)
    support = rng.normal(size=(2, 6, 4)).astype(np.float32)
    support_labels = np.tile([0, 1, 2, 0, 1, 2], [2, 1]).astype(np.int32)
    queries = rng.normal(size=(2, 5, 4)).astype(np.float32)

    def normalize(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    expected = []
    for task in range(2):
        projections = normalize(model.projector(support[task]).numpy())
        prototypes = normalize(np.stack([projections[support_labels[task] == c].mean(axis=0) for c in range(3)]))
        predictions = normalize(model.predictor(model.projector(queries[task])).numpy())
        expected.append(predictions @ prototypes.T / 0.5)
    batch = {"support_images": support, "support_labels": support_labels, "query_images": queries,
             "query_labels": np.zeros([2, 5], np.int32)}
    _, logits = model.meta_batch_learn(batch)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.few_shot_logits(support[1], support_labels[1], queries[1]), expected[1],
                               rtol=1e-5, atol=1e-6)
    backbone_logits = PsCo.from_config({**model.get_config(), "evaluation": "backbone"}).few_shot_logits(
        support[1], support_labels[1], queries[1])
    assert np.abs(np.asarray(backbone_logits) - expected[1]).max() > 0.05
    with pytest.raises(ValueError, match="evaluation"):
        PsCo(identity_backbone(), evaluation="momentum")


def test_evaluation_can_switch_to_the_heads_of_a_trained_model_and_nothing_else():
    from mssl_tf.cli import build_parser
    from mssl_tf.training.evaluate import apply_evaluation_options

    model = PsCo(identity_backbone(), hidden_units=[8], projection_units=4)
    args = build_parser().parse_args(["eval", "run", "--evaluation-option", "evaluation=heads"])
    apply_evaluation_options(model, dict(args.evaluation_option))
    assert model.evaluation == "heads"
    with pytest.raises(ValueError, match=r"evaluation='momentum' is not one of \['backbone', 'heads'\]"):
        apply_evaluation_options(model, {"evaluation": "momentum"})
    with pytest.raises(ValueError, match="PsCo has no evaluation option 'queue_size'; it has: evaluation"):
        apply_evaluation_options(model, {"queue_size": 8})
    assert model.evaluation == "heads" and model.queue_size != 8


# === Learning ===
# A known-easy set where a random encoder is at chance: 8 classes, each a unit vector in 4 "signal" dimensions, plus
# 12 nuisance dimensions of unit Gaussian noise drawn afresh for every view and every drawing (the augmentation).
# An encoder that becomes invariant to the nuisance separates the classes by nearest prototype. Measured here (seed 0,
# 200 steps of 64, Adam 5e-3): 5-way 1-shot accuracy 0.21 before, 0.72 after; with MoCo's term alone 0.70, with the
# pseudo-supervised term alone 0.62; the loss's sign flipped 0.49; gradient to the predictor only 0.21.
SIGNAL, NOISE, CLASSES = 4, 12, 8


def nuisance_draws(centers, labels, rng):
    signal = centers[labels] + 0.1 * rng.normal(size=(len(labels), SIGNAL))
    return np.concatenate([signal, rng.normal(size=(len(labels), NOISE))], 1).astype(np.float32)


def nearest_prototype_accuracy(model, centers, episodes=40):
    rng = np.random.default_rng(5)
    correct = []
    for _ in range(episodes):
        ways = rng.choice(CLASSES, 5, replace=False)
        support, queries = nuisance_draws(centers, ways, rng), nuisance_draws(centers, np.repeat(ways, 5), rng)
        logits = model.few_shot_logits(support, tf.range(5), queries)
        correct.append(np.mean(np.argmax(logits, axis=1) == np.repeat(np.arange(5), 5)))
    return float(np.mean(correct))


def test_short_fit_on_an_augmentation_invariance_task_lifts_nearest_prototype_accuracy_into_its_band():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(CLASSES, SIGNAL)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = rng.integers(0, CLASSES, [200, 64])
    views = np.stack([np.stack([nuisance_draws(centers, row, rng) for _ in range(2)], 1) for row in labels])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIGNAL + NOISE,))
    backbone = keras.Model(inputs, keras.layers.Dense(16)(keras.layers.Dense(32, activation="relu")(inputs)))
    model = PsCo(backbone, queue_size=256, hidden_units=[32], projection_units=16)
    model.compile(keras.optimizers.Adam(5e-3))
    before = nearest_prototype_accuracy(model, centers)
    model.fit(tf.data.Dataset.from_tensor_slices({"views": views}), epochs=1, verbose=0)
    after = nearest_prototype_accuracy(model, centers)
    assert before < 0.35 and after > 0.65, (before, after)
