"""Memory-based meta-learning: a key–value memory written with the support set and read by attention.

In the spirit of memory-augmented networks (Santoro et al., ICML 2016) and key–value memory networks (Miller et
al., EMNLP 2016): every support example is written to a slot whose key is a learned projection of its embedding
and whose value is its (pseudo-)label; a query reads the memory by attention over the keys and gets a class
distribution. A learned write gate decides how strongly each example is written, and writes are error-driven: a
write pass adds to a slot's strength the gate times how badly the memory (without that slot) already predicts the
example's label, so later passes reinforce what the memory still gets wrong. An always-present empty slot with a
learned score returns the uniform distribution, so an empty memory predicts chance and a written one adapts.
Reading adapts the model to a task with no gradient step; meta-training (query cross-entropy) learns the backbone,
the key projection, the gate, the temperature and the empty slot's score, all of which serialize with the model.

`persistent_slots=K` adds a memory that outlives the episode (issue 12): K learned (key, value) pairs in feature
space, written by the gradient of every meta-training task's loss (they are model weights, saved with it) and read
by every support and query embedding before the episode memory is written and read: attention over the persistent
keys by cosine similarity, and the attended value added to the embedding (`read_persistent`). The values are
directions in feature space, not labels, so what they store is class-agnostic (how to move an embedding that looks
like this) and applies to classes never seen in training; they start at zero, so an untrained persistent memory
leaves the model as it was.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel, task_cross_entropy

SMALLEST_STRENGTH = 1e-30  # log(strength) of an unwritten slot: −69, far below any attention score


def read_memory(query_keys, keys, values, strengths, temperature, empty_score, exclude_self=False):
    """Class distributions `[queries, ways]` read from slots (`keys [slots, k]`, `values [slots, ways]`).

    Attention over the slots and the empty slot: weight_i ∝ strength_i · exp(temperature · <query, key_i>), and
    the empty slot's weight ∝ exp(empty_score); the empty slot's value is uniform over the ways.
    `exclude_self` (queries are the slots themselves) hides slot i from query i.
    """
    scores = temperature * tf.matmul(query_keys, keys, transpose_b=True)
    scores += tf.math.log(tf.maximum(strengths, SMALLEST_STRENGTH))[tf.newaxis]
    if exclude_self:
        scores -= 1e9 * tf.eye(tf.shape(keys)[0], dtype=scores.dtype)
    empty = tf.fill([tf.shape(query_keys)[0], 1], tf.cast(empty_score, scores.dtype))
    attention = tf.nn.softmax(tf.concat([scores, empty], axis=-1), axis=-1)
    ways = tf.cast(tf.shape(values)[-1], values.dtype)
    return tf.matmul(attention[:, :-1], values) + attention[:, -1:] / ways


def write_memory(keys, values, gates, passes, temperature, empty_score):
    """Slot strengths `[slots]` after `passes` error-driven write passes of every example.

    Pass t reads every example from the memory of pass t − 1 (its own slot hidden) and adds
    `gate · (1 − p(its label))` to its slot's strength.
    """
    strengths = tf.zeros_like(gates)
    for _ in range(passes):
        read = read_memory(keys, keys, values, strengths, temperature, empty_score, exclude_self=True)
        surprise = 1.0 - tf.reduce_sum(read * values, axis=-1)
        strengths += gates * surprise
    return strengths


def write_memory_sequentially(keys, values, gates, passes, temperature, empty_score):
    """Slot strengths `[slots]` after `passes` passes that write the examples one after another.

    Within a pass, example i is read from the memory as it stands (the slots this pass has written so far and
    every earlier pass's, its own slot hidden) and `gate · (1 − p(its label))` is added to its slot. Unlike
    `write_memory`, the first pass is already error-driven: an example the memory already predicts (a second
    drawing like the first of its class) is written weakly, a surprising one strongly.
    """
    slots = tf.shape(keys)[0]
    strengths = tf.zeros_like(gates)
    for _ in range(passes):
        def write_one(index, strengths):
            hidden = tf.one_hot(index, slots, dtype=strengths.dtype)
            read = read_memory(keys[index][tf.newaxis], keys, values, strengths * (1.0 - hidden), temperature,
                               empty_score)
            surprise = 1.0 - tf.reduce_sum(read[0] * values[index])
            return index + 1, strengths + hidden * gates[index] * surprise

        _, strengths = tf.while_loop(lambda index, _: index < slots, write_one, (tf.constant(0), strengths))
    return strengths


WRITE_ORDERS = {"parallel": write_memory, "sequential": write_memory_sequentially}


def read_persistent(features, keys, values, temperature):
    """`features [n, d]` refined by a persistent memory: `features + softmax(temperature · cos(features, keys)) @
    values`, with `keys [slots, d]` and `values [slots, d]`."""
    similarity = tf.matmul(tf.math.l2_normalize(features, axis=-1), tf.math.l2_normalize(keys, axis=-1),
                           transpose_b=True)
    return features + tf.matmul(tf.nn.softmax(temperature * similarity, axis=-1), values)


@keras.saving.register_keras_serializable(package="mssl_tf")
class MemoryNetwork(EpisodicModel):
    """Few-shot classification by writing the support set into a key–value memory and reading it with queries.

    Args:
        backbone: images → features.
        key_units: width of the learned key projection (default: the feature width, initialized to identity, so
            an untrained memory reads by cosine similarity of backbone features).
        write_passes: error-driven write passes during meta-training.
        evaluation_write_passes: passes when evaluating (default `write_passes`); 0 leaves the memory empty.
        temperature: initial sharpness of the attention (learned, as its logarithm).
        write_order: `"parallel"` (every example of a pass read from the previous pass's memory: the first pass
            writes every slot with gate · (1 − 1/ways), since it reads an empty memory) or `"sequential"` (one
            example after another within a pass: `write_memory_sequentially`).
        persistent_slots: K learned (key, value) pairs read by every embedding before the episode memory
            (`read_persistent`, with a learned temperature starting at `temperature`); 0: none.

    Example:
        >>> model = MemoryNetwork(conv4(), write_passes=2)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(task_dataset(task_maker("augmentation", images, EpisodeSpec(20, 1, 5))), steps_per_epoch=100)
    """

    def __init__(self, backbone, key_units=None, write_passes=1, evaluation_write_passes=None, temperature=10.0,
                 write_order="parallel", persistent_slots=0, **kwargs):
        super().__init__(backbone, **kwargs)
        feature_dim = int(backbone.output_shape[-1])
        # === Config ===
        self.key_units = int(key_units or feature_dim)
        self.write_passes = int(write_passes)
        self.evaluation_write_passes = int(write_passes if evaluation_write_passes is None
                                           else evaluation_write_passes)
        self.temperature = float(temperature)
        if write_order not in WRITE_ORDERS:
            raise ValueError(f"write_order must be one of {sorted(WRITE_ORDERS)}, got {write_order!r}")
        self.write_order = write_order
        self.persistent_slots = int(persistent_slots)
        # === Layers and memory parameters ===
        initializer = "identity" if self.key_units == feature_dim else "glorot_uniform"
        self.key_projection = keras.layers.Dense(self.key_units, use_bias=False, kernel_initializer=initializer,
                                                 name="key_projection")
        self.key_projection.build((None, feature_dim))
        self.write_gate = keras.layers.Dense(1, kernel_initializer="zeros",
                                             bias_initializer=keras.initializers.Constant(2.0), name="write_gate")
        self.write_gate.build((None, feature_dim))
        self.log_temperature = self.add_weight(shape=(), initializer=keras.initializers.Constant(
            math.log(self.temperature)), name="log_temperature")
        self.empty_score = self.add_weight(shape=(), initializer="zeros", name="empty_score")
        if self.persistent_slots:  # created only when asked: a model without them keeps its weights list
            self.persistent_keys = self.add_weight(shape=(self.persistent_slots, feature_dim),
                                                   initializer="random_normal", name="persistent_keys")
            self.persistent_values = self.add_weight(shape=(self.persistent_slots, feature_dim),
                                                     initializer="zeros", name="persistent_values")
            self.persistent_log_temperature = self.add_weight(shape=(), initializer=keras.initializers.Constant(
                math.log(self.temperature)), name="persistent_log_temperature")

    def refine(self, features):
        """Embeddings after reading the persistent memory (unchanged without one)."""
        if not self.persistent_slots:
            return features
        return read_persistent(features, self.persistent_keys, self.persistent_values,
                               tf.exp(self.persistent_log_temperature))

    def keys(self, features):
        return tf.math.l2_normalize(self.key_projection(features), axis=-1)

    def classify(self, support_features, support_labels, query_features, passes):
        """Writes the support set with `passes` passes, reads the queries → logits `[queries, ways]`."""
        support_features, query_features = self.refine(support_features), self.refine(query_features)
        support_labels = tf.cast(support_labels, tf.int32)
        ways = tf.reduce_max(support_labels) + 1
        values = tf.one_hot(support_labels, ways, dtype=support_features.dtype)
        support_keys = self.keys(support_features)
        gates = tf.sigmoid(self.write_gate(support_features))[:, 0]
        temperature = tf.exp(self.log_temperature)
        strengths = WRITE_ORDERS[self.write_order](support_keys, values, gates, passes, temperature, self.empty_score)
        read = read_memory(self.keys(query_features), support_keys, values, strengths, temperature,
                           self.empty_score)
        return tf.math.log(read + 1e-12)

    def meta_learn(self, task, training):
        support_count = tf.shape(task["support_images"])[0]
        features = self.backbone(tf.concat([task["support_images"], task["query_images"]], 0), training=training)
        passes = self.write_passes if training else self.evaluation_write_passes
        logits = self.classify(features[:support_count], task["support_labels"], features[support_count:], passes)
        return task_cross_entropy(task["query_labels"], logits), logits

    def get_config(self):
        return {**super().get_config(), "key_units": self.key_units, "write_passes": self.write_passes,
                "evaluation_write_passes": self.evaluation_write_passes, "temperature": self.temperature,
                "write_order": self.write_order, "persistent_slots": self.persistent_slots}
