"""`EpisodicModel`: the shared base of every meta-learner trained on N-way K-shot tasks."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.base import BackboneModel, replica_count

TASK_KEYS = ("support_images", "support_labels", "query_images", "query_labels")


def task_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean sparse softmax cross-entropy over the last two axes' rows; keeps leading (task) axes."""
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits), axis=-1
    )


@keras.saving.register_keras_serializable(package="mssl_tf")
class EpisodicModel(BackboneModel):
    """Base of episodic meta-learners.

    A batch is a dict of a meta-batch of tasks (see `mssl_tf.data.episodes`). `train_step` takes the mean
    query loss over the tasks, scales it for the replicas of the strategy (gradients are summed across
    replicas by the optimizer) and applies it; `test_step` reports query loss and accuracy. Subclasses
    implement `meta_learn(task, training)` for one task, or override `meta_batch_learn` to process the
    tasks of a meta-batch together.

    `tasks_per_pass` (a training setting, not part of the model's config: `mssl-tf train --tasks-per-pass`)
    bounds memory: the meta-batch is split into groups of that many tasks, each group's gradient computed and
    added up one group after another inside the step (each group waits for the previous group's gradients, so
    one group's activations are freed before the next group's are made), then applied once. The update is the same
    as with the whole meta-batch at once; the peak memory is that of one group. Without it (None), every task of
    the meta-batch is in one pass: fastest, and for large tasks it can need more memory than the machine has.

    Calling the model maps images to embeddings with the backbone.

    Args:
        backbone: functional model mapping images to feature vectors.
    """

    BATCHES = "episodes"

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(backbone, **kwargs)
        self.tasks_per_pass = None
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # Every sub-layer is built in the constructors, so `fit` under a strategy does not trace `call` on the
        # episode dict to build the model (subclasses that add layers must build them in `__init__`).
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    # === Hooks ===
    def meta_learn(self, task: dict, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """One task → (query loss scalar, query logits `[queries, ways]`)."""
        raise NotImplementedError

    def meta_batch_learn(self, batch: dict, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """A meta-batch → (per-task query losses `[tasks]`, query logits `[tasks, queries, ways]`)."""
        tasks = batch["support_images"].shape[0]
        results = [self.meta_learn({key: batch[key][index] for key in TASK_KEYS}, training) for index in range(tasks)]
        return tf.stack([loss for loss, _ in results]), tf.stack([logits for _, logits in results])

    # === Keras steps ===
    def train_step(self, data):
        tasks = data["query_labels"].shape[0]
        if self.tasks_per_pass and tasks is not None and tasks > self.tasks_per_pass:
            loss, logits, gradients = self.gradients_in_groups(data, tasks, int(self.tasks_per_pass))
        else:
            with tf.GradientTape() as tape:
                losses, logits = self.meta_batch_learn(data, training=True)
                loss = tf.reduce_mean(losses)
                scaled_loss = loss / replica_count()
            gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self.update_trackers(loss, logits, data["query_labels"])

    def gradients_in_groups(self, data: dict, tasks: int, group: int):
        """(mean query loss, logits `[tasks, queries, ways]`, gradients) of the meta-batch, computed `group` tasks
        at a time in sequence; the gradients equal those of the whole meta-batch in one pass.

        The groups are unrolled in the graph, and each group's inputs wait on the previous group's gradient sums,
        so the executor cannot start a group before the last one's activations are done with."""
        if tasks % group:
            raise ValueError(f"tasks_per_pass={group} must divide the meta-batch of {tasks} tasks (per replica)")
        variables = self.trainable_variables
        scale = 1.0 / (tasks * replica_count())
        sums, loss_sum, all_logits = None, 0.0, []
        for start in range(0, tasks, group):
            with tf.control_dependencies(sums or []):
                batch = {key: tf.identity(data[key][start:start + group]) for key in TASK_KEYS}
            with tf.GradientTape() as tape:
                losses, logits = self.meta_batch_learn(batch, training=True)
                group_loss = tf.reduce_sum(losses)
                scaled_loss = group_loss * scale
            gradients = tape.gradient(scaled_loss, variables)
            gradients = [tf.zeros_like(variable) if gradient is None else tf.convert_to_tensor(gradient)
                         for gradient, variable in zip(gradients, variables)]
            sums = gradients if sums is None else [total + gradient for total, gradient in zip(sums, gradients)]
            loss_sum += group_loss
            all_logits.append(logits)
        return loss_sum / tasks, tf.concat(all_logits, 0), sums

    def test_step(self, data):
        losses, logits = self.meta_batch_learn(data, training=False)
        return self.update_trackers(tf.reduce_mean(losses), logits, data["query_labels"])

    def update_trackers(self, loss, logits, labels):
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(query_accuracy(logits, labels))
        return {metric.name: metric.result() for metric in self.metrics}


def query_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-task accuracy `[tasks]` of `logits [tasks, queries, ways]` against `labels [tasks, queries]`."""
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32), axis=-1)
