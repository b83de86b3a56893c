"""Generation-based meta-learning: VERSA (Gordon, Bronskill, Bauer, Nowozin & Turner, ICLR 2019, "Meta-Learning
Probabilistic Inference for Prediction", the ML-PIP framework).

An amortization network maps each class's support features to a Gaussian over that class's softmax weights and
bias; queries are classified by the predictive averaged over samples of the generated classifier.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.losses import replicas
from mssl_tf.methods.episodic import EpisodicModel


def class_posteriors(support_features, support_labels, amortization):
    """Gaussian `q(w_c, b_c | D_c)` per class from its mean-pooled support features (instance pooling: any shots).

    Args:
        support_features: `[tasks, support, d]`.
        support_labels: `[tasks, support]` int, classes 0..ways-1 (every task has the same number of ways).
        amortization: maps pooled features `[n, d]` to `[n, 2·(d + 1)]`: weight means, weight log-variances,
            bias mean, bias log-variance.

    Returns:
        `(weight_means [tasks, ways, d], weight_log_variances [tasks, ways, d], bias_means [tasks, ways],
        bias_log_variances [tasks, ways])`.
    """
    support_labels = tf.cast(support_labels, tf.int32)
    members = tf.one_hot(support_labels, tf.reduce_max(support_labels) + 1, dtype=support_features.dtype)
    pooled = tf.einsum("tsw,tsd->twd", members, support_features) / tf.reduce_sum(members, axis=1)[..., tf.newaxis]
    dimension = support_features.shape[-1]
    outputs = amortization(tf.reshape(pooled, [-1, dimension]))
    outputs = tf.reshape(outputs, tf.concat([tf.shape(pooled)[:2], [2 * dimension + 2]], axis=0))
    weight_means, weight_log_variances = outputs[..., :dimension], outputs[..., dimension : 2 * dimension]
    return weight_means, weight_log_variances, outputs[..., 2 * dimension], outputs[..., 2 * dimension + 1]


def logit_moments(query_features, weight_means, weight_log_variances, bias_means, bias_log_variances):
    """Mean and variance `[tasks, queries, ways]` of the Gaussian logits (local reparameterisation trick):
    `logit_c ~ N(μ_c·h + μ_b, (h²)·σ²_c + σ²_b)`."""
    means = tf.matmul(query_features, weight_means, transpose_b=True) + bias_means[:, tf.newaxis, :]
    variances = (tf.matmul(tf.square(query_features), tf.exp(weight_log_variances), transpose_b=True)
                 + tf.exp(bias_log_variances)[:, tf.newaxis, :])
    return means, variances


def log_predictive(means, variances, noise):
    """`log 1/L Σ_l softmax(means + sqrt(variances)·ε_l)`, `[..., queries, ways]`, from `noise [..., queries, ways,
    L]` (a log-mean-exp over the samples: the log of the averaged predictive)."""
    logits = means[..., tf.newaxis] + tf.sqrt(variances)[..., tf.newaxis] * noise
    log_probabilities = tf.nn.log_softmax(logits, axis=-2)
    samples = tf.cast(tf.shape(noise)[-1], log_probabilities.dtype)
    return tf.reduce_logsumexp(log_probabilities, axis=-1) - tf.math.log(samples)


def predictive_loss(log_probabilities, labels):
    """ML-PIP's objective per task `[tasks]`: −mean over queries of `log p(y_q | x_q)` (the averaged predictive)."""
    chosen = tf.gather(log_probabilities, tf.cast(labels, tf.int32), axis=-1, batch_dims=2)
    return -tf.reduce_mean(chosen, axis=-1)


@keras.saving.register_keras_serializable(package="mssl_tf")
class Versa(EpisodicModel):
    """VERSA: each class's classifier is generated from its support set as a Gaussian, predictions average samples.

    For each class c the support features are mean-pooled and passed through an MLP (ELU hidden layers, the
    paper's `d_θ`-wide post-processing) to the mean and log-variance of `q(w_c, b_c | D_c)`; each class is generated
    independently, so any number of ways and shots works. The predictive `p(y|x) ≈ 1/L Σ_l softmax(logits_l)` uses
    logits sampled by the local reparameterisation trick, and training minimises ML-PIP's
    `−mean_q log 1/L Σ_l p(y_q | x_q, ψ_l)`. The returned logits are the log of the averaged predictive.

    Noise is stateless, hence reproducible: in training it is drawn afresh each step from (`seed`, optimizer
    step, the task's index in the global meta-batch), so a step under several replicas draws what one device
    draws; in evaluation every task uses the same draw from `seed`, so `mssl-tf eval` and the served `few_shot`
    signature answer alike, and a query's prediction does not depend on the other queries or tasks of a call.

    Args:
        backbone: images → features.
        hidden_units: widths of the amortization network's hidden layers (default: two of the feature width).
        samples: L, classifier samples per query in training (the paper's 10).
        evaluation_samples: L in evaluation (default `samples`).
        seed: seed of the stateless noise.
        initial_log_variance: what every generated log-variance (weights and bias) starts at.

    Example:
        >>> model = Versa(conv4())
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(episode_dataset(train_images, EpisodeSpec(20, 1, 5)), steps_per_epoch=100)
    """

    def __init__(self, backbone, hidden_units=None, samples=10, evaluation_samples=None, seed=0,
                 initial_log_variance=-6.0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.feature_dim = int(backbone.output_shape[-1])
        # === Config ===
        default_units = (self.feature_dim, self.feature_dim)
        self.hidden_units = tuple(int(units) for units in (default_units if hidden_units is None else hidden_units))
        self.samples = int(samples)
        self.evaluation_samples = int(samples if evaluation_samples is None else evaluation_samples)
        self.seed = int(seed)
        self.initial_log_variance = float(initial_log_variance)
        # === Layers ===
        layers = [keras.layers.Dense(units, activation="elu", name=f"hidden_{index}")
                  for index, units in enumerate(self.hidden_units)]
        layers.append(keras.layers.Dense(2 * (self.feature_dim + 1), name="posterior"))
        self.amortization = keras.Sequential(layers, name="amortization")
        self.amortization.build((None, self.feature_dim))
        # The log-variances start at one constant for every class and input: nearly deterministic classifiers
        # (σ ≈ 0.05 at −6) that training widens where it pays, instead of noise that swamps the first steps.
        dimension = self.feature_dim
        variance_outputs = tf.concat([tf.zeros([dimension]), tf.ones([dimension]), [0.0, 1.0]], axis=0)
        posterior = self.amortization.layers[-1]
        posterior.kernel.assign(posterior.kernel * (1.0 - variance_outputs))
        posterior.bias.assign(variance_outputs * self.initial_log_variance)

    def noise(self, tasks, queries_and_ways, training, first_task):
        """Standard normal `[tasks, queries, ways, L]`: evaluation's one fixed draw for every task, or in training
        a draw per step and per global task index."""
        if not training:
            shape = tf.concat([queries_and_ways, [self.evaluation_samples]], axis=0)
            draw = tf.random.stateless_normal(shape, seed=[self.seed, 0])
            return tf.broadcast_to(draw, tf.concat([[tasks], shape], axis=0))
        shape = tf.concat([queries_and_ways, [self.samples]], axis=0)
        step = self.optimizer.iterations if self.optimizer is not None else 0
        step_seed = tf.random.experimental.stateless_fold_in([self.seed, 1], tf.cast(step, tf.int64))
        return tf.stack([tf.random.stateless_normal(shape, seed=tf.random.experimental.stateless_fold_in(
            step_seed, tf.cast(first_task + index, tf.int64))) for index in range(tasks)])

    def first_task_index(self, tasks):
        """Index in the global meta-batch of this replica's first task (replicas hold consecutive slices), so that
        each task draws the training noise it draws on one device."""
        return replicas.replica_offset(tasks)

    def meta_batch_learn(self, batch, training):
        tasks = batch["support_images"].shape[0]
        support_count = tf.shape(batch["support_images"])[1]
        # The backbone runs per task (batch statistics of one task, whatever the replicas); the rest is batched.
        features = tf.stack([
            self.backbone(tf.concat([batch["support_images"][index], batch["query_images"][index]], 0),
                          training=training)
            for index in range(tasks)])
        posterior = class_posteriors(features[:, :support_count], batch["support_labels"], self.amortization)
        means, variances = logit_moments(features[:, support_count:], *posterior)
        noise = self.noise(tasks, tf.shape(means)[1:], training, self.first_task_index(tasks))
        log_probabilities = log_predictive(means, variances, noise)
        return predictive_loss(log_probabilities, batch["query_labels"]), log_probabilities

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "samples": self.samples,
                "evaluation_samples": self.evaluation_samples, "seed": self.seed,
                "initial_log_variance": self.initial_log_variance}
