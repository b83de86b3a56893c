"""Self-supervised losses against values computed by hand (numpy) on tiny batches, and their defining properties."""

import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.losses import (
    barlow_twins_loss,
    byol_loss,
    infonce,
    negative_cosine,
    nt_xent,
    simsiam_loss,
    symmetric_byol_loss,
    transformation_prediction_loss,
)


def unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_nt_xent_on_three_pairs_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    b = np.array([[2.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    temperature = 0.5
    everything = unit(np.concatenate([a, b]))  # anchors 0..2 = a, 3..5 = b
    similarities = everything @ everything.T / temperature
    losses = []
    for anchor in range(6):
        positive = (anchor + 3) % 6
        others = [k for k in range(6) if k != anchor]
        losses.append(-similarities[anchor, positive] + np.log(np.exp(similarities[anchor, others]).sum()))
    expected = np.mean(losses)
    assert float(nt_xent(tf.constant(a, tf.float32), tf.constant(b, tf.float32), temperature)) == pytest.approx(
        expected, rel=1e-5
    )


def test_nt_xent_is_invariant_to_a_common_permutation_and_to_norms():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    permutation = rng.permutation(6)
    loss = float(nt_xent(a, b, 0.2))
    assert float(nt_xent(a[permutation], b[permutation], 0.2)) == pytest.approx(loss, rel=1e-5)
    assert float(nt_xent(3.0 * a, 0.5 * b, 0.2)) == pytest.approx(loss, rel=1e-5)
    # Pairing matters: the loss changes when only one view is permuted.
    assert float(nt_xent(a[permutation], b, 0.2)) != pytest.approx(loss, rel=1e-3)


def test_infonce_with_a_queue_by_hand():
    queries = np.array([[1.0, 0.0], [1.0, 1.0]])
    keys = np.array([[1.0, 1.0], [0.0, 3.0]])
    queue = np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, -1.0]])
    temperature = 0.2
    q, k, n = unit(queries), unit(keys), unit(queue)
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ n.T], axis=1) / temperature
    expected = np.mean(-logits[:, 0] + np.log(np.exp(logits).sum(1)))
    value = infonce(*(tf.constant(x, tf.float32) for x in (queries, keys, queue)), temperature)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_byol_loss_by_hand_and_zero_for_identical_vectors():
    p = np.array([[1.0, 0.0], [3.0, 4.0]], np.float32)
    z = np.array([[0.0, 2.0], [3.0, 4.0]], np.float32)
    # cosines 0 and 1 → 2 − 2·cos = 2 and 0.
    assert float(byol_loss(p, z)) == pytest.approx(1.0, abs=1e-6)
    assert float(byol_loss(p, 5.0 * p)) == pytest.approx(0.0, abs=1e-6)
    assert float(symmetric_byol_loss(p, z, z, p)) == pytest.approx(2.0, abs=1e-6)


def test_simsiam_loss_by_hand_and_stop_gradient():
    p_a = tf.Variable([[1.0, 0.0]])
    z_a = tf.Variable([[1.0, 1.0]])
    p_b = tf.Variable([[0.0, 1.0]])
    z_b = tf.Variable([[0.0, 1.0]])
    with tf.GradientTape(persistent=True) as tape:
        loss = simsiam_loss(p_a, z_a, p_b, z_b)
        single = negative_cosine(p_a, z_b)
    # D(p_a, z_b) = −cos 90° = 0; D(p_b, z_a) = −cos 45°.
    assert float(loss) == pytest.approx(-0.5 / np.sqrt(2), rel=1e-6)
    assert tape.gradient(single, z_b) is None  # the stop-gradient branch receives no gradient
    assert tape.gradient(single, p_a) is not None
    assert tape.gradient(loss, [z_a, z_b]) == [None, None]
    assert all(g is not None for g in tape.gradient(loss, [p_a, p_b]))


def test_barlow_twins_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])
    b = np.array([[0.0, 1.0], [1.0, 1.0], [5.0, 0.0]])
    redundancy_weight = 0.3

    def standardize(x):
        return (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)

    correlation = standardize(a).T @ standardize(b) / 3
    expected = ((1 - np.diag(correlation)) ** 2).sum() + redundancy_weight * (
        correlation[0, 1] ** 2 + correlation[1, 0] ** 2
    )
    value = barlow_twins_loss(tf.constant(a, tf.float32), tf.constant(b, tf.float32), redundancy_weight)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_barlow_twins_is_invariant_to_a_per_dimension_affine_map():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(16, 5)).astype(np.float32), rng.normal(size=(16, 5)).astype(np.float32)
    scale_a, shift_a = rng.uniform(0.5, 3.0, 5).astype(np.float32), rng.normal(size=5).astype(np.float32)
    scale_b, shift_b = rng.uniform(0.5, 3.0, 5).astype(np.float32), rng.normal(size=5).astype(np.float32)
    loss = float(barlow_twins_loss(a, b))
    assert float(barlow_twins_loss(a * scale_a + shift_a, b * scale_b + shift_b)) == pytest.approx(loss, rel=1e-4)
    # A negative scale flips a correlation's sign, which the diagonal term sees.
    assert float(barlow_twins_loss(-a, b)) != pytest.approx(loss, rel=1e-2)


def test_transformation_prediction_cross_entropy_by_hand():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]], np.float32)
    labels = np.array([0, 1])
    expected = np.mean([-2 + np.log(np.exp(2) + 2), -1 + np.log(1 + np.e + np.exp(3))])
    assert float(transformation_prediction_loss(labels, logits)) == pytest.approx(expected, rel=1e-6)
