"""MAML (Finn, Abbeel & Levine, ICML 2017), first-order MAML, Meta-SGD (Li et al. 2017), ANIL
(Raghu et al. 2020) and UNICORN-MAML's shared head (Ye & Chao, "How to Train Your MAML to Excel in Few-Shot
Classification", ICLR 2022) as options of one model.

Fast weights are plain tensors, never assigned to variables and never a cloned model: the inner loop
differentiates the support loss with respect to them under a tape nested inside `train_step`'s tape, so
the outer gradient flows through the inner updates (second order) unless `first_order=True` stops it.

Two ways to run the tasks of a meta-batch, same numbers (tested):
- `task_batching=True`: every task's fast weights carry a leading task axis and the network runs once for all
  tasks with grouped convolutions (`mssl_tf.ops.task_batched`);
- `task_batching=False` (and models the grouped path does not support): `network.stateless_call` per task
  inside `tf.map_fn`, a compiled loop traced once whatever the meta-batch size.
benchmarks/README.md says which is faster where.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.backbones.fused_batch_norm import FusedBatchNormalization
from mssl_tf.backbones.layer_norm import ExactLayerNormalization
from mssl_tf.methods.episodic import EpisodicModel, task_cross_entropy
from mssl_tf.ops import task_batched

ADAPT_CHOICES = ("all", "head")
HEAD_CHOICES = ("per_class", "shared")


def inexact_second_order_layers(model) -> list[str]:
    """Layers whose second derivative TensorFlow gets wrong: Keras' own batch and layer normalization (their
    `tf.nn.moments` centres by `stop_gradient(mean)`); ours (`FusedBatchNormalization`, `ExactLayerNormalization`)
    are exact, each checked against central differences inside MAML."""
    exact = (FusedBatchNormalization, ExactLayerNormalization)
    return [layer.name for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization))
            and not isinstance(layer, exact)]


def build_network(network: keras.Sequential, backbone, classifier=None) -> None:
    """Builds the adapted network: from the backbone's input shape, or, for a text backbone (strings in, already
    built), by building the classifier on its features and applying the layers in sequence."""
    if getattr(backbone, "TAKES_TEXT", False):
        if classifier is not None:
            classifier.build((None, backbone.output_shape[-1]))
        network.built = True
        return
    network.build((None, *backbone.input_shape[1:]))


@keras.saving.register_keras_serializable(package="mssl_tf")
class MAML(EpisodicModel):
    """Model-Agnostic Meta-Learning with a linear classifier on a backbone.

    Batch norm always uses the statistics of the batch it sees (transductive, as in Finn et al.).

    Args:
        backbone: image encoder.
        ways: classes per task (size of the classifier; with `head="shared"` only the training setting).
        inner_steps: gradient steps on the support set during meta-training.
        evaluation_inner_steps: steps when evaluating (defaults to `inner_steps`).
        inner_learning_rate: step size of the inner loop (initial value when learned).
        first_order: drop the second-order term (the inner gradients are treated as constants).
        learn_inner_learning_rate: Meta-SGD, one learned step size per parameter.
        adapt: `"all"` parameters in the inner loop, or only the classifier (`"head"`, ANIL).
        task_batching: run all tasks of a meta-batch through the network at once (grouped convolutions)
            instead of a compiled loop over tasks.
        head: `"per_class"`, a learned row per class (`ways` outputs, only `ways`-way tasks), or `"shared"`
            (UNICORN-MAML): one learned weight vector w and bias b, replicated into the N rows of every task's
            initial classifier (W_0 = [w, ..., w], N = the task's classes, read from its support labels), so
            adaptation starts permutation-invariant and any N works; the meta-gradient of w sums over the copies.
            That sum is exactly zero under softmax cross-entropy (adding one vector to every row shifts all of an
            example's logits equally, and every inner gradient of the body weighs the rows by p - y, which sums to
            zero), so w and b never move: the shared head acts as a permutation-invariant zero start (Kao et al.'s
            "zeroing trick", ICLR 2022); tests/test_maml_shared_head.py checks it against central differences.

    Example:
        >>> model = MAML(conv4(), ways=5, inner_steps=1, inner_learning_rate=0.4)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(episode_dataset(train_images, EpisodeSpec(5, 1, 15), meta_batch=32), steps_per_epoch=100)
    """

    RUN_ARGUMENTS = ("ways",)  # the classifier has as many outputs as the run's tasks have classes

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
        head="per_class",
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if adapt not in ADAPT_CHOICES:
            raise ValueError(f"adapt must be one of {ADAPT_CHOICES}, got {adapt!r}")
        if head not in HEAD_CHOICES:
            raise ValueError(f"head must be one of {HEAD_CHOICES}, got {head!r}")
        # === Config ===
        self.ways = int(ways)
        self.inner_steps = int(inner_steps)
        self.evaluation_inner_steps = int(inner_steps if evaluation_inner_steps is None else evaluation_inner_steps)
        self.inner_learning_rate = float(inner_learning_rate)
        self.first_order = bool(first_order)
        self.learn_inner_learning_rate = bool(learn_inner_learning_rate)
        self.adapt = adapt
        self.task_batching = bool(task_batching)
        self.head = head
        if not self.first_order and adapt == "all" and inexact_second_order_layers(backbone):
            names = inexact_second_order_layers(backbone)
            raise ValueError(
                f"second-order adaptation through {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}: Keras' own "
                "batch and layer normalization give a wrong second derivative (measured against central differences). "
                "Use first_order=True (fomaml), adapt='head' (anil), or a backbone built with mssl_tf's "
                "FusedBatchNormalization / ExactLayerNormalization (conv4, resnets, --backbone transformer)")
        # === Layers ===
        if head == "per_class":
            self.classifier = keras.layers.Dense(self.ways, name="classifier")
            self.network = keras.Sequential([backbone, self.classifier], name="network")
            build_network(self.network, backbone, self.classifier)
            adapted_layers = [self.network if adapt == "all" else self.classifier]
        else:  # the network ends at the features; the task's replicated head is applied in `shared_head_logits`
            self.classifier = keras.layers.Dense(1, name="classifier")
            self.network = keras.Sequential([backbone], name="network")
            build_network(self.network, backbone)
            self.classifier.build((None, backbone.output_shape[-1]))
            adapted_layers = [self.network, self.classifier] if adapt == "all" else [self.classifier]
        self.batched = self.task_batching and task_batched.supports(self.network)
        self.adapted_variables = [v for layer in adapted_layers for v in layer.trainable_variables]
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

    # === Inner loop ===
    def grouped_logits(self, fast_weights, images):
        """Logits `[tasks, n, ways]` for `images [tasks, n, ...]`, all tasks in one grouped-convolution pass."""
        outputs = task_batched.forward(self.network, fast_weights, images, training=True)
        return self.shared_head_logits(fast_weights, outputs) if self.head == "shared" else outputs

    def stateless_logits(self, fast_weights, images):
        """Logits `[n, ways]` for one task's `images [n, ...]` under its `fast_weights` (`stateless_call`)."""
        trainable = [fast_weights.get(v.path, v.value) for v in self.network.trainable_variables]
        non_trainable = [variable.value for variable in self.network.non_trainable_variables]
        outputs, _ = self.network.stateless_call(trainable, non_trainable, images, training=True)
        return self.shared_head_logits(fast_weights, outputs) if self.head == "shared" else outputs

    def shared_head_logits(self, fast_weights, features):
        """`features [..., n, d]` times the task's head `[..., d, N]` plus its bias `[..., N]` → `[..., n, N]`."""
        kernel, bias = fast_weights[self.classifier.kernel.path], fast_weights[self.classifier.bias.path]
        return tf.matmul(features, kernel) + bias[..., tf.newaxis, :]

    def initial_weights(self, ways, tasks=None):
        """Variable path → where each task's inner loop starts: the variable, with a leading `tasks` axis when given.

        With `head="shared"` the head's w `[d, 1]` and b `[1]` are replicated into `ways` rows, `[d, ways]` and
        `[ways]` (`ways` may be a tensor): the gradient of the replication sums over the copies.
        """
        initial = {}
        for variable in self.adapted_variables:
            value = variable.value
            if self.head == "shared" and variable.path in (self.classifier.kernel.path, self.classifier.bias.path):
                value = tf.tile(value, [1] * (value.shape.rank - 1) + [ways])
                if tasks is not None:
                    value = tf.tile(value[tf.newaxis], [tasks] + [1] * value.shape.rank)
            elif tasks is not None:
                value = tf.broadcast_to(value[tf.newaxis], [tasks, *variable.shape])
            initial[variable.path] = value
        return initial

    def inner_loop(self, fast_weights, images, labels, steps, logits_fn, first_order=None):
        """`steps` gradient steps on the cross-entropy of `logits_fn(fast_weights, images)` against `labels`.

        The losses of several tasks are summed, so each task's fast weights follow their own task's gradient.
        """
        first_order = self.first_order if first_order is None else first_order
        fast = dict(fast_weights)
        paths = [variable.path for variable in self.adapted_variables]
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch([fast[path] for path in paths])
                loss = self.inner_loss(fast, fast_weights, images, labels, logits_fn)
            gradients = tape.gradient(loss, [fast[path] for path in paths])
            for index, (path, gradient) in enumerate(zip(paths, gradients)):
                gradient = tf.convert_to_tensor(gradient)  # an embedding table's gradient comes as IndexedSlices
                if first_order:
                    gradient = tf.stop_gradient(gradient)
                rate = self.inner_learning_rates[index] if self.inner_learning_rates else self.inner_learning_rate
                fast[path] = fast[path] - rate * gradient
        return fast

    def inner_loss(self, fast_weights, initial_weights, images, labels, logits_fn):
        """The loss an inner step descends, summed over tasks: cross-entropy here (iMAML adds a proximal term)."""
        return tf.reduce_sum(task_cross_entropy(labels, logits_fn(fast_weights, images)))

    def adapt_tasks(self, images, labels, steps, query_images, first_order=None):
        """Adapts to each task of a meta-batch and classifies its queries.

        Args:
            images, labels: `[tasks, n, ...]`, `[tasks, n]` to adapt on.
            steps: inner-loop steps.
            query_images: `[tasks, q, ...]` classified with the adapted weights.

        Returns:
            (fast weights: variable path → `[tasks, *shape]`, a shared head's `[tasks, d, N]` and `[tasks, N]`;
            query logits `[tasks, q, ways]`).
        """
        # A shared head has as many rows as the meta-batch's tasks have classes (all tasks alike, both paths).
        ways = tf.reduce_max(labels) + 1 if self.head == "shared" else self.ways
        if self.batched:
            initial = self.initial_weights(ways, tasks=images.shape[0])
            fast = self.inner_loop(initial, images, labels, steps, self.grouped_logits, first_order)
            return fast, self.grouped_logits(fast, query_images)
        paths = [variable.path for variable in self.adapted_variables]

        def one_task(task):
            task_images, task_labels, task_queries = task
            fast = self.inner_loop(self.initial_weights(ways), task_images, task_labels, steps, self.stateless_logits,
                                   first_order)
            return [fast[path] for path in paths], self.stateless_logits(fast, task_queries)

        initial = self.initial_weights(ways)
        width = None if self.head == "shared" else self.ways
        signature = (
            [tf.TensorSpec(initial[path].shape, initial[path].dtype) for path in paths],
            tf.TensorSpec([query_images.shape[1], width], self.classifier.compute_dtype),
        )
        # A compiled loop over tasks: one trace of the task body whatever the meta-batch size.
        fast_list, logits = tf.map_fn(one_task, (images, labels, query_images), fn_output_signature=signature)
        return dict(zip(paths, fast_list)), logits

    @property
    def few_shot_ways(self) -> int | None:
        return None if self.head == "shared" else self.ways

    def meta_batch_learn(self, batch, training):
        steps = self.inner_steps if training else self.evaluation_inner_steps
        _, logits = self.adapt_tasks(batch["support_images"], batch["support_labels"], steps, batch["query_images"])
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
            head=self.head,
        )
        return config
