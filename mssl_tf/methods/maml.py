"""MAML (Finn, Abbeel & Levine, ICML 2017), first-order MAML, Meta-SGD (Li et al. 2017) and ANIL
(Raghu et al. 2020) as options of one model.

Fast weights are plain tensors, never assigned to variables and never a cloned model: the inner loop
differentiates the support loss with respect to them under a tape nested inside `train_step`'s tape, so
the outer gradient flows through the inner updates (second order) unless `first_order=True` stops it.

The tasks of a meta-batch are adapted together: every task's fast weights carry a leading task axis and
the network runs once for all tasks with grouped convolutions (`mssl_tf.ops.task_batched`). Models that
path does not support, or `task_batching=False`, run `network.stateless_call` task by task instead; both
paths give the same numbers (tested).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel, task_cross_entropy
from mssl_tf.ops import task_batched

ADAPT_CHOICES = ("all", "head")


@keras.saving.register_keras_serializable(package="mssl_tf")
class MAML(EpisodicModel):
    """Model-Agnostic Meta-Learning with a linear classifier on a backbone.

    Batch norm always uses the statistics of the batch it sees (transductive, as in Finn et al.).

    Args:
        backbone: image encoder.
        ways: classes per task (size of the classifier).
        inner_steps: gradient steps on the support set during meta-training.
        evaluation_inner_steps: steps when evaluating (defaults to `inner_steps`).
        inner_learning_rate: step size of the inner loop (initial value when learned).
        first_order: drop the second-order term (the inner gradients are treated as constants).
        learn_inner_learning_rate: Meta-SGD, one learned step size per parameter.
        adapt: `"all"` parameters in the inner loop, or only the classifier (`"head"`, ANIL).
        task_batching: run all tasks of a meta-batch through the network at once.

    Example:
        >>> model = MAML(conv4(), ways=5, inner_steps=1, inner_learning_rate=0.4)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(episode_dataset(train_images, EpisodeSpec(5, 1, 15), meta_batch=32), steps_per_epoch=100)
    """

    def __init__(
        self,
        backbone,
        ways,
        inner_steps=1,
        evaluation_inner_steps=None,
        inner_learning_rate=0.4,
        first_order=False,
        learn_inner_learning_rate=False,
        adapt="all",
        task_batching=True,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if adapt not in ADAPT_CHOICES:
            raise ValueError(f"adapt must be one of {ADAPT_CHOICES}, got {adapt!r}")
        # === Config ===
        self.ways = int(ways)
        self.inner_steps = int(inner_steps)
        self.evaluation_inner_steps = int(inner_steps if evaluation_inner_steps is None else evaluation_inner_steps)
        self.inner_learning_rate = float(inner_learning_rate)
        self.first_order = bool(first_order)
        self.learn_inner_learning_rate = bool(learn_inner_learning_rate)
        self.adapt = adapt
        self.task_batching = bool(task_batching)
        # === Layers ===
        self.classifier = keras.layers.Dense(self.ways, name="classifier")
        self.network = keras.Sequential([backbone, self.classifier], name="network")
        self.network.build((None, *backbone.input_shape[1:]))
        self.batched = self.task_batching and task_batched.supports(self.network)
        adapted_layer = self.network if adapt == "all" else self.classifier
        self.adapted_variables = list(adapted_layer.trainable_variables)
        self.inner_learning_rates = []
        if self.learn_inner_learning_rate:
            self.inner_learning_rates = [
                self.add_weight(
                    shape=variable.shape,
                    initializer=keras.initializers.Constant(self.inner_learning_rate),
                    name=f"inner_learning_rate_{index}",
                )
                for index, variable in enumerate(self.adapted_variables)
            ]

    def classify(self, images, training=False):
        """Logits of the (unadapted) network for a batch of images."""
        return self.network(images, training=training)

    # === Inner loop ===
    def forward(self, fast_weights, images):
        """Logits `[tasks, n, ways]` for `images [tasks, n, ...]` under per-task `fast_weights`."""
        if self.batched:
            return task_batched.forward(self.network, fast_weights, images, training=True)
        non_trainable = [variable.value for variable in self.network.non_trainable_variables]
        outputs = []
        for task in range(images.shape[0]):
            trainable = [
                fast_weights[variable.path][task] if variable.path in fast_weights else variable.value
                for variable in self.network.trainable_variables
            ]
            logits, _ = self.network.stateless_call(trainable, non_trainable, images[task], training=True)
            outputs.append(logits)
        return tf.stack(outputs)

    def adapt_to(self, images, labels, steps, first_order=None):
        """Fast weights after `steps` gradient steps on `images [tasks, n, ...]`, `labels [tasks, n]`.

        Returns:
            dict variable path → tensor `[tasks, *variable.shape]`.
        """
        first_order = self.first_order if first_order is None else first_order
        tasks = images.shape[0]
        fast = {
            variable.path: tf.broadcast_to(variable.value[tf.newaxis], [tasks, *variable.shape])
            for variable in self.adapted_variables
        }
        paths = list(fast)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch([fast[path] for path in paths])
                loss = tf.reduce_sum(task_cross_entropy(labels, self.forward(fast, images)))
            gradients = tape.gradient(loss, [fast[path] for path in paths])
            for index, (path, gradient) in enumerate(zip(paths, gradients)):
                if first_order:
                    gradient = tf.stop_gradient(gradient)
                rate = self.inner_learning_rates[index] if self.inner_learning_rates else self.inner_learning_rate
                fast[path] = fast[path] - rate * gradient
        return fast

    def meta_batch_learn(self, batch, training):
        steps = self.inner_steps if training else self.evaluation_inner_steps
        fast = self.adapt_to(batch["support_images"], batch["support_labels"], steps)
        logits = self.forward(fast, batch["query_images"])
        return task_cross_entropy(batch["query_labels"], logits), logits

    def get_config(self):
        config = super().get_config()
        config.update(
            ways=self.ways,
            inner_steps=self.inner_steps,
            evaluation_inner_steps=self.evaluation_inner_steps,
            inner_learning_rate=self.inner_learning_rate,
            first_order=self.first_order,
            learn_inner_learning_rate=self.learn_inner_learning_rate,
            adapt=self.adapt,
            task_batching=self.task_batching,
        )
        return config
