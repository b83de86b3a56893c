"""Expected calibration error (Guo et al. 2017) by hand, and in every few-shot evaluation: `evaluate` reports the ECE
of all query predictions of its episodes, recomputed here from the model's logits episode by episode."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf.data.episodes import EVALUATION_SEED, EpisodeSpec, episode_dataset
from mssl_tf.evaluation import evaluate, expected_calibration_error
from mssl_tf.methods import ProtoNet


def test_expected_calibration_error_by_hand():
    """Bins of width 1/4, right-closed ((0.5, 0.75] holds 0.75). Confidences and hits: 0.75 ✓ → bin 3; 0.5 ✗ and
    0.4 ✓ → bin 2 (accuracy 0.5, confidence 0.45); 0.9 ✓ and 0.8 ✗ → bin 4 (0.5 against 0.85).
    ECE = 2/5·0.05 + 1/5·0.25 + 2/5·0.35 = 0.21 (left-closed bins would give 0.31, an unweighted mean 0.2167)."""
    probabilities = [[0.75, 0.2, 0.05], [0.5, 0.3, 0.2], [0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.3, 0.4]]
    labels = [0, 1, 1, 0, 2]
    assert expected_calibration_error(probabilities, labels, bins=4) == pytest.approx(0.21)
    # One bin: |accuracy − mean confidence| = |3/5 − 0.67|.
    assert expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(0.07)


def test_calibrated_predictions_score_zero_and_confident_mistakes_one():
    confident = np.tile([[0.8, 0.1, 0.1]], (10, 1))
    eight_of_ten = np.array([0] * 8 + [1, 2])
    assert expected_calibration_error(confident, eight_of_ten) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.tile([[1.0, 0.0]], (4, 1)), [1, 1, 1, 1]) == pytest.approx(1.0)
    assert expected_calibration_error(confident, np.zeros(10, int)) == pytest.approx(0.2)  # under-confident


def reference_ece(probabilities, labels, bins=15):
    """Per prediction: its bin is the m with (m − 1)/M < confidence ≤ m/M; then Guo et al.'s weighted gaps."""
    gaps = {}
    for row, label in zip(probabilities, labels):
        confidence = max(row)
        index = max(int(np.ceil(confidence * bins)) - 1, 0)
        gaps.setdefault(index, []).append((float(np.argmax(row) == label), confidence))
    return sum(abs(np.mean([hit for hit, _ in members]) - np.mean([c for _, c in members])) * len(members)
               for members in gaps.values()) / len(labels)


def test_evaluate_reports_the_calibration_of_every_query_of_every_episode(train_images):
    """An untrained ProtoNet on Omniglot: 76% right at near-uniform confidence, ECE 0.56 over the 20 episodes, 0.52
    and 0.60 over their halves (the two calls of 10 tasks), so one call's predictions alone would not pass."""
    keras.utils.set_random_seed(0)
    model = ProtoNet(mssl_tf.conv4())
    classes, spec, episodes = train_images[:60], EpisodeSpec(5, 1, 3), 20
    result = evaluate(model, classes, spec, episodes=episodes, tasks_per_call=10)
    probabilities, labels = [], []
    for batch in episode_dataset(classes, spec, meta_batch=1, seed=EVALUATION_SEED, num_episodes=episodes):
        _, logits = model.meta_batch_learn(batch, training=False)
        probabilities.extend(tf.nn.softmax(logits[0]).numpy().tolist())
        labels.extend(batch["query_labels"][0].numpy().tolist())
    assert len(labels) == episodes * 15
    expected = reference_ece(probabilities, labels)
    assert expected > 0.02, "the example must be visibly miscalibrated"
    assert result["ece"] == pytest.approx(round(100 * expected, 2), abs=0.011)
