"""iMAML: implicit model-agnostic meta-learning (Rajeswaran, Finn, Kakade & Levine, "Meta-Learning with Implicit
Gradients", NeurIPS 2019, arXiv:1909.04630).

The inner problem of a task is proximal: the adapted weights approximately solve

    phi*(theta) = argmin_phi  L_support(phi) + (lambda / 2) ||phi - theta||^2,

found by `inner_steps` plain gradient steps from `theta` (MAML's inner loop with the proximal term added through
its `inner_loss` hook). Nothing records those steps for the outer gradient: by the implicit function theorem
d phi* / d theta = (I + H / lambda)^{-1}, H the Hessian of the support loss at phi*, so the task's meta-gradient is

    g = (I + H / lambda)^{-1} grad_phi L_query(phi*),

computed by `cg_steps` of conjugate gradient on Hessian-vector products (double backward: a persistent tape over
the support gradient, differentiated again along each CG direction). CG needs I + H / lambda positive definite, true
when lambda exceeds minus the smallest eigenvalue of H (a network's H may be indefinite: a larger lambda, or fewer
CG steps, keeps the solve tame). Memory is that of one inner step and one
Hessian-vector product, whatever `inner_steps` is (measured: tests/test_imaml.py,
benchmarks/results/imaml_memory.json).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.base import replica_count
from mssl_tf.methods.episodic import TASK_KEYS, task_cross_entropy
from mssl_tf.methods.maml import MAML


def conjugate_gradient(apply, right_hand_side, steps, task_rank=0):
    """Approximately solves `apply(x) = right_hand_side` by `steps` of conjugate gradient from x = 0.

    Args:
        apply: a symmetric positive-definite linear map on lists of tensors (here `v + H v / lambda`).
        right_hand_side: list of tensors b.
        steps: CG iterations (exact after as many iterations as b has entries, in exact arithmetic).
        task_rank: leading axes that index independent systems (1 for a batch of tasks, each with its own step
            sizes; 0 for one system).

    Returns:
        The list of tensors x.
    """

    def dot(first, second):
        return tf.add_n([tf.reduce_sum(a * b, axis=list(range(task_rank, a.shape.rank))) for a, b in zip(first, second)])

    def scale(scalars, tensors):
        return [tf.reshape(scalars, scalars.shape.as_list() + [1] * (t.shape.rank - task_rank)) * t for t in tensors]

    solution = [tf.zeros_like(b) for b in right_hand_side]
    residual, direction = list(right_hand_side), list(right_hand_side)
    residual_norm = dot(residual, residual)
    for _ in range(steps):
        product = apply(direction)
        step = tf.math.divide_no_nan(residual_norm, dot(direction, product))
        solution = [x + p for x, p in zip(solution, scale(step, direction))]
        residual = [r - q for r, q in zip(residual, scale(step, product))]
        new_norm = dot(residual, residual)
        direction = [r + p for r, p in zip(residual, scale(tf.math.divide_no_nan(new_norm, residual_norm), direction))]
        residual_norm = new_norm
    return solution


@keras.saving.register_keras_serializable(package="mssl_tf")
class IMAML(MAML):
    """iMAML with a linear classifier on a backbone; every parameter is adapted.

    Shares MAML's network, fast weights, inner loop (both task paths: grouped convolutions or `stateless_call` per
    task), evaluation and fixed-width classifier (`few_shot_ways` = `ways`; no shared head, see `__init__`). Batch
    norm uses the statistics of the batch it sees, as in MAML. Evaluation adapts with the same proximal inner loop (`evaluation_inner_steps`).

    Args:
        backbone: image encoder.
        ways: classes per task (size of the classifier).
        inner_steps: gradient steps on the proximal support loss during meta-training.
        evaluation_inner_steps: steps when evaluating (defaults to `inner_steps`).
        inner_learning_rate: step size of the inner loop.
        regularization: lambda, the strength of the proximal term (larger: adapted weights stay nearer theta).
        cg_steps: conjugate-gradient iterations per task for the meta-gradient.
        task_batching: as `MAML`.

    Example:
        >>> model = IMAML(conv4(), ways=5, inner_steps=5, inner_learning_rate=0.1, regularization=2.0)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(episode_dataset(train_images, EpisodeSpec(5, 1, 15), meta_batch=32), steps_per_epoch=100)
    """

    def __init__(
        self,
        backbone,
        ways,
        inner_steps=5,
        evaluation_inner_steps=None,
        inner_learning_rate=0.1,
        regularization=2.0,
        cg_steps=5,
        task_batching=True,
        **kwargs,
    ):
        if kwargs.get("head", "per_class") != "per_class":
            raise ValueError(
                "imaml supports only head='per_class': with a shared head (UNICORN-MAML) the adapted head has N "
                "copies of w, N the task's classes, and the implicit meta-gradient of w would be "
                "Rᵀ (I + H/λ)⁻¹ grad L_query (the CG solution summed over the copies), which this class does not "
                "compute (its CG solve returns one gradient per variable, of the variable's shape); use maml, "
                "fomaml, metasgd, anil or reptile with head='shared'")
        super().__init__(
            backbone, ways, inner_steps=inner_steps, evaluation_inner_steps=evaluation_inner_steps,
            inner_learning_rate=inner_learning_rate, first_order=True, task_batching=task_batching, **kwargs,
        )
        if regularization <= 0:
            raise ValueError(f"regularization (lambda) must be positive, got {regularization}")
        # === Config ===
        self.regularization = float(regularization)
        self.cg_steps = int(cg_steps)

    # === Inner problem ===
    def inner_loss(self, fast_weights, initial_weights, images, labels, logits_fn):
        """Support cross-entropy + (lambda / 2) ||phi - theta||^2, summed over tasks."""
        proximal = tf.add_n([tf.reduce_sum(tf.square(fast_weights[path] - initial)) for path, initial in
                             initial_weights.items()])
        return super().inner_loss(fast_weights, initial_weights, images, labels, logits_fn) + (
            0.5 * self.regularization * proximal)

    # === Implicit meta-gradient ===
    def task_meta_gradients(self, support_images, support_labels, query_images, query_labels, tasks=None):
        """One task (`tasks=None`, `stateless_call`), or `tasks` stacked on a leading axis (grouped convolutions).

        Returns:
            ((I + H / lambda)^{-1} grad L_query(phi) for each adapted variable, query logits at phi).
        """
        paths = [variable.path for variable in self.adapted_variables]
        if tasks is None:
            logits_fn, task_rank = self.stateless_logits, 0
            initial = {v.path: tf.stop_gradient(v.value) for v in self.adapted_variables}
        else:
            logits_fn, task_rank = self.grouped_logits, 1
            initial = {v.path: tf.stop_gradient(tf.broadcast_to(v.value[tf.newaxis], [tasks, *v.shape]))
                       for v in self.adapted_variables}
        fast = self.inner_loop(initial, support_images, support_labels, self.inner_steps, logits_fn, first_order=True)
        adapted = [tf.stop_gradient(fast[path]) for path in paths]

        def weights(values):
            return dict(zip(paths, values))

        with tf.GradientTape() as tape:
            tape.watch(adapted)
            logits = logits_fn(weights(adapted), query_images)
            query_loss = tf.reduce_sum(task_cross_entropy(query_labels, logits))
        query_gradients = tape.gradient(query_loss, adapted)
        hessian_product = self.hessian_vector_product(adapted, support_images, support_labels, logits_fn)

        def proximal_hessian_product(vectors):
            return [v + hv / self.regularization for v, hv in zip(vectors, hessian_product(vectors))]

        return conjugate_gradient(proximal_hessian_product, query_gradients, self.cg_steps, task_rank), logits

    def hessian_vector_product(self, weights, images, labels, logits_fn):
        """v ↦ H v, H the Hessian of the (task-summed) support cross-entropy at `weights` (a list in
        `adapted_variables` order), by double backward: the support gradient is taped once, then differentiated
        along each `v`."""
        paths = [variable.path for variable in self.adapted_variables]
        with tf.GradientTape(persistent=True) as outer_tape:
            outer_tape.watch(weights)
            with tf.GradientTape() as inner_tape:
                inner_tape.watch(weights)
                loss = tf.reduce_sum(task_cross_entropy(labels, logits_fn(dict(zip(paths, weights)), images)))
            gradients = inner_tape.gradient(loss, weights)

        def product(vectors):
            return outer_tape.gradient(gradients, weights, output_gradients=vectors,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return product

    def meta_gradients(self, batch):
        """A meta-batch → (implicit meta-gradient of each adapted variable, mean over tasks; query logits)."""
        tensors = tuple(batch[key] for key in TASK_KEYS)
        if self.batched:
            gradients, logits = self.task_meta_gradients(*tensors, tasks=tensors[0].shape[0])
        else:
            signature = (
                [tf.TensorSpec(variable.shape, variable.dtype) for variable in self.adapted_variables],
                tf.TensorSpec([tensors[2].shape[1], self.ways], self.classifier.compute_dtype),
            )
            gradients, logits = tf.map_fn(lambda task: self.task_meta_gradients(*task), tensors,
                                          fn_output_signature=signature)
        return [tf.reduce_mean(gradient, axis=0) for gradient in gradients], logits

    def train_step(self, data):
        gradients, logits = self.meta_gradients(data)
        scaled = [gradient / replica_count() for gradient in gradients]  # the optimizer sums over replicas
        self.optimizer.apply_gradients(zip(scaled, self.adapted_variables))
        loss = tf.reduce_mean(task_cross_entropy(data["query_labels"], logits))
        return self.update_trackers(loss, logits, data["query_labels"])

    def get_config(self):
        config = super().get_config()
        for implied in ("first_order", "learn_inner_learning_rate", "adapt"):
            config.pop(implied)
        config.update(regularization=self.regularization, cg_steps=self.cg_steps)
        return config
