"""Few-shot evaluation on a fixed, seeded set of episodes, reported as mean ± 95% confidence interval (and the
expected calibration error of the query predictions)."""

from __future__ import annotations

import functools
import math
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from mssl_tf.data.episodes import EVALUATION_SEED, EpisodeSpec, episode_dataset
from mssl_tf.data.modality import as_constant, model_input
from mssl_tf.methods.episodic import query_accuracy


def confidence_interval(accuracies) -> tuple[float, float]:
    """Mean and 95% half-width (1.96 · std / sqrt(n)) of per-episode accuracies."""
    values = np.asarray(accuracies, dtype=np.float64)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))


def episode_accuracies(model, class_images, spec: EpisodeSpec, episodes=600, tasks_per_call=10, seed=EVALUATION_SEED):
    """Query accuracy of `model` on each of the first `episodes` tasks of `seed`.

    Episode i depends only on (seed, i), so grouping `tasks_per_call` tasks per call does not change them.
    """
    return episode_predictions(model, class_images, spec, episodes, tasks_per_call, seed)[0]


def episode_predictions(model, class_images, spec: EpisodeSpec, episodes=600, tasks_per_call=10,
                        seed=EVALUATION_SEED):
    """One pass over the episodes of `episode_accuracies` → (per-episode accuracies `[episodes]`, query
    probabilities `[episodes · queries, ways]` (softmax of the method's logits), query labels `[episodes · queries]`).
    """
    tasks_per_call = math.gcd(episodes, tasks_per_call)
    dataset = episode_dataset(class_images, spec, meta_batch=tasks_per_call, seed=seed, num_episodes=episodes)
    score = episode_scorer(model)
    accuracies, probabilities, labels = [], [], []
    for batch in dataset:
        for scores, value in zip((accuracies, probabilities, labels), score(batch)):
            scores.append(value.numpy())
    return (np.concatenate(accuracies), np.concatenate(probabilities).reshape(-1, spec.ways),
            np.concatenate(labels).reshape(-1))


# model → {trace settings → traced scorer}. Validation scores the same model after every epoch: traced once, a
# 10-episode pass takes 0.22 (ProtoNet) and 0.35 (MAML) of the CPU of one that traces, a 200-episode pass 0.84 and
# 0.90 (benchmarks/results/validation_retrace.json).
_SCORERS = weakref.WeakKeyDictionary()


def episode_scorer(model):
    """`model`'s evaluation of a meta-batch, traced once per `trace_settings` and kept while the model lives:
    batch → (per-task accuracies, query probabilities, query labels)."""
    settings = trace_settings(model)
    scorers = _SCORERS.setdefault(model, {})
    if settings not in scorers:
        scorers[settings] = traced_scorer(weakref.ref(model))  # a weak reference: the cache must not keep it alive
    return scorers[settings]


def traced_scorer(model_reference):
    @tf.function
    def score(batch):
        _, logits = model_reference().meta_batch_learn(batch, training=False)
        return query_accuracy(logits, batch["query_labels"]), tf.nn.softmax(logits), batch["query_labels"]

    return score


def trace_settings(model) -> tuple:
    """The method's own plain attributes (numbers, strings, flags and tuples of them; not Keras's bookkeeping):
    a trace reads them as constants (`evaluation_inner_steps`, `evaluation_write_passes`, ...), so a change of any
    of them must not reuse a trace made before it."""
    return tuple(sorted((name, value) for name, value in vars(model).items()
                        if not name.startswith("_") and name not in keras_model_attributes() and is_plain(value)))


@functools.cache
def keras_model_attributes() -> frozenset:
    """What Keras itself sets on a compiled model (`stop_training`, `steps_per_execution`, ...)."""
    probe = keras.Model()
    probe.compile()
    return frozenset(vars(probe))


def is_plain(value) -> bool:
    if isinstance(value, tuple):
        return all(is_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def expected_calibration_error(probabilities, labels, bins: int = 15) -> float:
    """Expected calibration error (Guo, Pleiss, Sun & Weinberger, ICML 2017, "On Calibration of Modern Neural
    Networks"): predictions grouped by confidence (the top probability) into `bins` equal-width bins
    ((m−1)/M, m/M]; ECE = Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)|, a fraction in [0, 1].

    Args:
        probabilities: `[n, classes]` predictive probabilities.
        labels: `[n]` true classes.
        bins: M, the number of confidence bins.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidences = probabilities.max(axis=-1)
    correct = (probabilities.argmax(axis=-1) == np.asarray(labels)).astype(np.float64)
    members = np.clip(np.ceil(confidences * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for member in np.unique(members):
        chosen = members == member
        total += chosen.sum() * abs(correct[chosen].mean() - confidences[chosen].mean())
    return float(total / len(confidences))


def evaluate(model, class_images, spec: EpisodeSpec, episodes=600, tasks_per_call=10) -> dict:
    """Accuracy (percent) with its 95% interval over the fixed evaluation episodes of `spec`, and the expected
    calibration error (percent, 15 bins) of all their query predictions."""
    start = time.perf_counter()
    accuracies, probabilities, labels = episode_predictions(model, class_images, spec, episodes, tasks_per_call)
    mean, half_width = confidence_interval(accuracies)
    return {
        "ways": spec.ways,
        "shots": spec.shots,
        "queries": spec.queries,
        "episodes": int(len(accuracies)),
        "accuracy": round(100.0 * mean, 2),
        "ci95": round(100.0 * half_width, 2),
        "ece": round(100.0 * expected_calibration_error(probabilities, labels), 2),
        "evaluation_seconds": round(time.perf_counter() - start, 1),
    }


# === Frozen-encoder evaluation: kNN and linear probe ===
#
# Protocol (Omniglot): every class of the split (the Vinyals test split: 423 characters × 4 rotations = 1692
# classes) is one label; drawings 0–9 of each class fit the classifier (the kNN memory, or the linear probe's
# training set) and drawings 10–19 are scored, a 1692-way classification of 16,920 images. Embeddings are the
# model's output on images in [0, 1] (`model(images, training=False)`: backbone features, batch norm in inference
# mode), never trained here. Accuracy in percent ± the binomial 95% half-width 1.96·sqrt(p(1 − p)/n).


def frozen_embeddings(model, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Features `[N, dim]` of uint8 images `[N, H, W]` (or with channels), or of sentences `[N]`, from the frozen
    `model`."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]

    @tf.function
    def embed(batch):
        return model(model_input(batch), training=False)

    return np.concatenate([embed(as_constant(images[start : start + batch_size])).numpy()
                           for start in range(0, len(images), batch_size)])


def fit_and_score_split(class_images: np.ndarray, fit_drawings: int = 10):
    """`[classes, drawings, ...]` → (fit images, fit labels, scored images, scored labels), split by drawing."""
    classes, drawings = class_images.shape[:2]
    if not 0 < fit_drawings < drawings:
        raise ValueError(f"fit_drawings must be between 1 and {drawings - 1}, got {fit_drawings}")
    labels = np.repeat(np.arange(classes, dtype=np.int32), drawings).reshape(classes, drawings)
    fit = (class_images[:, :fit_drawings].reshape(-1, *class_images.shape[2:]), labels[:, :fit_drawings].ravel())
    score = (class_images[:, fit_drawings:].reshape(-1, *class_images.shape[2:]), labels[:, fit_drawings:].ravel())
    return (*fit, *score)


def classification_result(protocol: str, predictions, labels, classes: int, start: float, **details) -> dict:
    accuracy = float(np.mean(np.asarray(predictions) == np.asarray(labels)))
    return {
        "protocol": protocol,
        "classes": int(classes),
        "scored": int(len(labels)),
        "accuracy": round(100.0 * accuracy, 2),
        "ci95": round(100.0 * 1.96 * math.sqrt(accuracy * (1 - accuracy) / len(labels)), 2),
        **details,
        "evaluation_seconds": round(time.perf_counter() - start, 1),
    }


def nearest_neighbor_predictions(fit_embeddings, fit_labels, query_embeddings, neighbors: int = 1, classes=None):
    """kNN by cosine similarity: each of the `neighbors` nearest fit embeddings votes for its class with its
    similarity; the class with the largest total wins."""
    fit = tf.math.l2_normalize(tf.constant(fit_embeddings, tf.float32), axis=-1)
    query = tf.math.l2_normalize(tf.constant(query_embeddings, tf.float32), axis=-1)
    classes = int(classes or np.max(fit_labels) + 1)
    predictions = []
    for start in range(0, query.shape[0], 1024):
        similarities, indices = tf.math.top_k(tf.matmul(query[start : start + 1024], fit, transpose_b=True), neighbors)
        votes = tf.one_hot(tf.gather(tf.constant(fit_labels), indices), classes) * similarities[..., tf.newaxis]
        predictions.append(tf.argmax(tf.reduce_sum(votes, axis=1), axis=-1, output_type=tf.int32).numpy())
    return np.concatenate(predictions)


def knn_accuracy(model, class_images: np.ndarray, neighbors: int = 1, fit_drawings: int = 10) -> dict:
    """kNN accuracy (cosine, similarity-weighted votes of `neighbors`) of frozen embeddings; protocol above."""
    start = time.perf_counter()
    fit_images, fit_labels, score_images, score_labels = fit_and_score_split(class_images, fit_drawings)
    predictions = nearest_neighbor_predictions(
        frozen_embeddings(model, fit_images), fit_labels, frozen_embeddings(model, score_images), neighbors,
        classes=class_images.shape[0],
    )
    return classification_result("knn", predictions, score_labels, class_images.shape[0], start,
                                 neighbors=neighbors, fit_per_class=fit_drawings)


def train_linear_classifier(features, labels, classes: int, steps: int = 100, learning_rate: float = 0.1,
                            weight_decay: float = 1e-4):
    """Multinomial logistic regression on standardized features, full batch, Adam from zero weights
    (deterministic). Returns a function from features to logits."""
    import keras

    features = tf.constant(features, tf.float32)
    mean = tf.reduce_mean(features, axis=0)
    scale = tf.math.reduce_std(features, axis=0) + 1e-6
    standardized = (features - mean) / scale
    kernel = tf.Variable(tf.zeros([features.shape[1], classes]))
    bias = tf.Variable(tf.zeros([classes]))
    optimizer = keras.optimizers.Adam(learning_rate)
    labels = tf.constant(labels, tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = tf.matmul(standardized, kernel) + bias
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            loss += weight_decay * tf.reduce_sum(tf.square(kernel))
        optimizer.apply_gradients(zip(tape.gradient(loss, [kernel, bias]), [kernel, bias]))
        return loss

    for _ in range(steps):
        step()
    return lambda inputs: tf.matmul((tf.constant(inputs, tf.float32) - mean) / scale, kernel) + bias


def linear_probe_accuracy(model, class_images: np.ndarray, fit_drawings: int = 10, steps: int = 100,
                          learning_rate: float = 0.1, weight_decay: float = 1e-4) -> dict:
    """Accuracy of a linear classifier (logistic regression) trained on frozen embeddings; protocol above."""
    start = time.perf_counter()
    fit_images, fit_labels, score_images, score_labels = fit_and_score_split(class_images, fit_drawings)
    classes = class_images.shape[0]
    classifier = train_linear_classifier(frozen_embeddings(model, fit_images), fit_labels, classes, steps,
                                         learning_rate, weight_decay)
    logits = classifier(frozen_embeddings(model, score_images))
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32).numpy()
    return classification_result("linear", predictions, score_labels, classes, start, fit_per_class=fit_drawings,
                                 steps=steps, learning_rate=learning_rate, weight_decay=weight_decay)


def adaptation_curve(model, class_images, spec: EpisodeSpec, steps=(0, 1, 5), episodes=600, tasks_per_call=10,
                     seed=EVALUATION_SEED) -> list[dict]:
    """Accuracy after each number of adaptation steps on the same fixed episodes: inner-loop steps (MAML family,
    hyper-network fine-tuning) or memory write passes (`MemoryNetwork`; 0 leaves the memory empty).

    Returns:
        One dict per entry of `steps`: `{"steps", "accuracy", "ci95", "episodes", "evaluation_seconds"}`.
    """
    from mssl_tf.methods.meta_ssl import adaptation_steps

    curve = []
    for count in steps:
        start = time.perf_counter()
        with adaptation_steps(model, count):
            accuracies = episode_accuracies(model, class_images, spec, episodes, tasks_per_call, seed)
        mean, half_width = confidence_interval(accuracies)
        curve.append({"steps": int(count), "accuracy": round(100.0 * mean, 2), "ci95": round(100.0 * half_width, 2),
                      "episodes": int(len(accuracies)), "evaluation_seconds": round(time.perf_counter() - start, 1)})
    return curve
