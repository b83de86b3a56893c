"""Network-based meta-learning: a hyper-network emits each task's classifier from its support set.

Class means of the support embeddings, each with the task's mean prototype as context, go through a learned MLP
that outputs a correction to the classifier row of that class (in the spirit of Qiao et al., CVPR 2018,
"Few-shot image recognition by predicting parameters from activations", and LEO, Rusu et al., ICLR 2019). The
MLP's last layer starts at zero and the row starts as the prototype classifier (w_c = 2·p_c, b_c = −|p_c|²,
Prototypical Networks' logits up to a per-query constant), so an untrained model already adapts by the support
set. A few optional gradient steps then fine-tune the emitted head on the support set, with learned step sizes,
differentiated through (second order) unless `first_order`. The learned-learning-rates variant of network-based
meta-learning is Meta-SGD, registered as `metasgd` (`mssl_tf.methods.maml.MAML(learn_inner_learning_rate=True)`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel, task_cross_entropy


def head_logits(features, weights, biases):
    """`features [n, d]` · `weights [ways, d]`ᵀ + `biases [ways]` → `[n, ways]`."""
    return tf.matmul(features, weights, transpose_b=True) + biases


@keras.saving.register_keras_serializable(package="mssl_tf")
class HyperNetwork(EpisodicModel):
    """Classifies queries with a head the hyper-network emits from the support set, optionally fine-tuned.

    Args:
        backbone: images → features.
        hidden_units: hidden widths of the hyper-network (ReLU).
        inner_steps: gradient steps on the emitted head during meta-training (0: the emitted head as is).
        evaluation_inner_steps: steps when evaluating (default `inner_steps`).
        inner_learning_rate: initial step size of the fine-tuning, learned (one for the weights, one for the biases).
        first_order: treat the fine-tuning gradients as constants in the meta-gradient.

    Example:
        >>> model = HyperNetwork(conv4(), inner_steps=1)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(task_dataset(task_maker("augmentation", images, EpisodeSpec(5, 1, 5))), steps_per_epoch=100)
    """

    def __init__(self, backbone, hidden_units=(256,), inner_steps=0, evaluation_inner_steps=None,
                 inner_learning_rate=0.1, first_order=False, **kwargs):
        super().__init__(backbone, **kwargs)
        self.feature_dim = int(backbone.output_shape[-1])
        # === Config ===
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.inner_steps = int(inner_steps)
        self.evaluation_inner_steps = int(inner_steps if evaluation_inner_steps is None else evaluation_inner_steps)
        self.inner_learning_rate = float(inner_learning_rate)
        self.first_order = bool(first_order)
        # === Layers ===
        layers = [keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")
                  for index, units in enumerate(self.hidden_units)]
        layers.append(keras.layers.Dense(self.feature_dim + 1, kernel_initializer="zeros", name="head_correction"))
        self.generator = keras.Sequential(layers, name="generator")
        self.generator.build((None, 2 * self.feature_dim))
        # Learned only when meta-training fine-tunes (inner_steps > 0); otherwise they stay at `inner_learning_rate`
        # for evaluation-time steps, and Keras does not warn about variables without gradients.
        self.inner_learning_rates = [
            self.add_weight(shape=(), initializer=keras.initializers.Constant(self.inner_learning_rate), name=name,
                            trainable=self.inner_steps > 0)
            for name in ("inner_learning_rate_weights", "inner_learning_rate_biases")
        ]

    def emit_head(self, support_features, support_labels):
        """The task's classifier `(weights [ways, d], biases [ways])` from its support features."""
        support_labels = tf.cast(support_labels, tf.int32)
        ways = tf.reduce_max(support_labels) + 1
        prototypes = tf.math.unsorted_segment_mean(support_features, support_labels, ways)
        context = tf.broadcast_to(tf.reduce_mean(prototypes, axis=0, keepdims=True), tf.shape(prototypes))
        correction = self.generator(tf.concat([prototypes, context], axis=-1))
        weights = 2.0 * prototypes + correction[:, : self.feature_dim]
        biases = -tf.reduce_sum(tf.square(prototypes), axis=-1) + correction[:, self.feature_dim]
        return weights, biases

    def fine_tune(self, weights, biases, support_features, support_labels, steps):
        """`steps` gradient steps of the head on the support cross-entropy (nested tape: second order)."""
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch([weights, biases])
                loss = task_cross_entropy(support_labels, head_logits(support_features, weights, biases))
            gradients = tape.gradient(loss, [weights, biases])
            if self.first_order:
                gradients = [tf.stop_gradient(gradient) for gradient in gradients]
            weights = weights - self.inner_learning_rates[0] * gradients[0]
            biases = biases - self.inner_learning_rates[1] * gradients[1]
        return weights, biases

    def meta_learn(self, task, training):
        support_count = tf.shape(task["support_images"])[0]
        features = self.backbone(tf.concat([task["support_images"], task["query_images"]], 0), training=training)
        support_features, query_features = features[:support_count], features[support_count:]
        weights, biases = self.emit_head(support_features, task["support_labels"])
        steps = self.inner_steps if training else self.evaluation_inner_steps
        weights, biases = self.fine_tune(weights, biases, support_features, task["support_labels"], steps)
        logits = head_logits(query_features, weights, biases)
        return task_cross_entropy(task["query_labels"], logits), logits

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "inner_steps": self.inner_steps,
                "evaluation_inner_steps": self.evaluation_inner_steps,
                "inner_learning_rate": self.inner_learning_rate, "first_order": self.first_order}
