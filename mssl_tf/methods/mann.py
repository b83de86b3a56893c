"""MANN: a Memory-Augmented Neural Network (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, ICML 2016,
"Meta-Learning with Memory-Augmented Neural Networks").

An LSTM controller reads a task as a sequence: at step t it sees the backbone's features of image x_t, the label
of the *previous* step y_{t−1} (one step late, zeros at t = 0) and the previous read r_{t−1}. It emits a key k_t
and a write gate α_t, and an external memory M (slots × width, empty at the start of every task) is written by
Least-Recently-Used Access and read by content:

    w^w_t = σ(α_t) w^r_{t−1} + (1 − σ(α_t)) w^lu_{t−1}   (where it last read, or the least used slot)
    M_t(i) = M_{t−1}(i) (1 − w^lu_{t−1}(i)) + w^w_t(i) k_t       (the least used slot is erased before the write)
    w^r_t(i) = softmax_i(β_t · cos(k_t, M_{t−1}(i))),  r_t = Σ_i w^r_t(i) M_{t−1}(i)
    w^u_t = γ w^u_{t−1} + w^r_t + w^w_t,  w^lu_t = one-hot of the least used slot (argmin w^u_t: one read head)

and the class logits are a softmax layer on [h_t, r_t]. The read uses the memory as the key arrives, M_{t−1}: the
paper writes r_t = Σ_i w^r_t(i) M_t(i), and read literally (`read_before_write=False`) a step reads back mostly the
key it has just written, so a query retrieves its own key. On 3-way 1-shot tasks of random vectors (1500 steps, an
8-unit controller) reading first reached 0.92, reading after the write 0.56, and a controller with the read zeroed
0.69 (tests/test_mann.py keeps the first two apart). β_t = 1 + softplus(·) of the controller output is the
content-addressing key strength of the Neural Turing Machine (Graves et al. 2014) that MANN builds on (Santoro's
equation is the case β = 1: with 128 slots and a cosine in [−1, 1] such a read is nearly uniform).

An episode (support ways×shots + queries) becomes one sequence: the support set in a pseudo-random order (a hash of
each image's pixels: the same order on every device, in evaluation and in the served model), labels one step late;
then every query is one more step from the state after the whole support set, with the last support label as its
previous label, all queries in parallel (no query sees another, a query label is never an input). The loss is the
cross-entropy of the queries plus, as Santoro trains on every step, of the support steps whose class already
appeared earlier in the sequence (`support_loss`, in training only: a class's first appearance cannot be predicted,
so with one shot only the queries count; evaluation reports the query loss as every method does).

The label one-hots and the softmax layer have `max_ways` entries: the model adapts to any task with at most that
many classes (`few_shot_ways` is None) and the graph refuses a task with more; a task's logits are the softmax
layer's first `ways` outputs (`ways` = largest support label + 1).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.methods.episodic import EpisodicModel

COSINE_EPSILON = 1e-8  # the cosine of an empty (all-zero) slot is 0


def sequence_order(images: tf.Tensor, seed: int) -> tf.Tensor:
    """A permutation `[tasks, n]` of each task's `images [tasks, n, ...]` (values in [0, 1]) that depends only on
    their pixels and `seed`: an integer hash (Park–Miller steps) of each image's sum of 8-bit pixel levels. Integer
    arithmetic makes it exact, so every replica, evaluation and the served model (uint8 ÷ 255) see the same order."""
    levels = tf.cast(tf.round(tf.cast(images, tf.float32) * 255.0), tf.int64)
    hashed = tf.reduce_sum(tf.reshape(levels, [tf.shape(images)[0], tf.shape(images)[1], -1]), -1) + 7919 * seed
    for _ in range(3):
        hashed = tf.math.floormod(hashed * 48271 + 11, 2147483647)
    return tf.argsort(hashed, axis=-1, stable=True)


def cosine_similarity(keys: tf.Tensor, memory: tf.Tensor) -> tf.Tensor:
    """cos(k, M(i)) `[batch, slots]` of `keys [batch, width]` with `memory [batch, slots, width]`."""
    dot = tf.einsum("bw,bsw->bs", keys, memory)
    norms = tf.norm(keys, axis=-1, keepdims=True) * tf.norm(memory, axis=-1)
    return dot / (norms + COSINE_EPSILON)


def least_used(usage: tf.Tensor) -> tf.Tensor:
    """w^lu `[batch, slots]`: 1 at the least used slot (the first of equals), 0 elsewhere."""
    return tf.one_hot(tf.argmin(usage, axis=-1), tf.shape(usage)[-1], dtype=usage.dtype)


def lrua_step(memory, usage, read_weights, key, gate_logit, strength, usage_decay, read_before_write=True):
    """One Least-Recently-Used Access write then content read (the module docstring's equations).

    Args:
        memory: M_{t−1} `[batch, slots, width]`; usage: w^u_{t−1} `[batch, slots]`; read_weights: w^r_{t−1}.
        key: k_t `[batch, width]`; gate_logit: α_t `[batch, 1]`; strength: β_t `[batch, 1]`.
        usage_decay: γ.
        read_before_write: read M_{t−1} (the memory as the key arrives) instead of M_t.

    Returns:
        (M_t, w^u_t, w^r_t, r_t `[batch, width]`).
    """
    previous_least_used = least_used(usage)
    gate = tf.sigmoid(gate_logit)
    write_weights = gate * read_weights + (1.0 - gate) * previous_least_used
    erased = memory * (1.0 - previous_least_used)[..., tf.newaxis]
    written = erased + write_weights[..., tf.newaxis] * key[:, tf.newaxis]
    read_from = memory if read_before_write else written
    read_weights = tf.nn.softmax(strength * cosine_similarity(key, read_from), axis=-1)
    usage = usage_decay * usage + read_weights + write_weights
    read = tf.einsum("bs,bsw->bw", read_weights, read_from)
    return written, usage, read_weights, read


@keras.saving.register_keras_serializable(package="mssl_tf")
class MANN(EpisodicModel):
    """Memory-Augmented Neural Network (Santoro et al. 2016) on a backbone's features.

    Args:
        backbone: images → features.
        max_ways: most classes a task may have (width of the label one-hot and of the softmax layer).
        controller_units: LSTM units (Santoro: 200).
        memory_slots, memory_width: size of the external memory (Santoro: 128 × 40).
        usage_decay: γ of the usage update (Santoro: 0.95 to 0.99).
        support_loss: also train on the support steps whose class appeared before in the sequence.
        order_seed: seed of the support sequence's order.
        read_before_write: read the memory as the key arrives (M_{t−1}, default) rather than after this step's
            write (M_t, the paper's equations read literally; see the module docstring).

    Example:
        >>> model = MANN(conv4(), max_ways=5)
        >>> model.compile(keras.optimizers.Adam(1e-3))
        >>> model.fit(episode_dataset(train_images, EpisodeSpec(5, 1, 5), meta_batch=16), steps_per_epoch=100)
    """

    def __init__(self, backbone, max_ways=20, controller_units=200, memory_slots=128, memory_width=40,
                 usage_decay=0.95, support_loss=True, order_seed=0, read_before_write=True, **kwargs):
        super().__init__(backbone, **kwargs)
        feature_dim = int(backbone.output_shape[-1])
        # === Config ===
        self.max_ways = int(max_ways)
        self.controller_units = int(controller_units)
        self.memory_slots = int(memory_slots)
        self.memory_width = int(memory_width)
        self.usage_decay = float(usage_decay)
        self.support_loss = bool(support_loss)
        self.order_seed = int(order_seed)
        self.read_before_write = bool(read_before_write)
        # === Layers ===
        self.controller = keras.layers.LSTMCell(self.controller_units, name="controller")
        self.controller.build((None, feature_dim + self.max_ways + self.memory_width))
        self.key_layer = keras.layers.Dense(self.memory_width, activation="tanh", name="key")
        self.key_layer.build((None, self.controller_units))
        self.gate_layer = keras.layers.Dense(1, name="write_gate")
        self.gate_layer.build((None, self.controller_units))
        self.strength_layer = keras.layers.Dense(1, name="key_strength")
        self.strength_layer.build((None, self.controller_units))
        self.classifier = keras.layers.Dense(self.max_ways, name="classifier")
        self.classifier.build((None, self.controller_units + self.memory_width))

    def initial_state(self, tasks):
        """(h, c, M, w^u, w^r, r) at the start of a task: an empty memory, no usage, no read."""
        zeros = tf.zeros([tasks, self.memory_slots])
        return (tf.zeros([tasks, self.controller_units]), tf.zeros([tasks, self.controller_units]),
                tf.zeros([tasks, self.memory_slots, self.memory_width]), zeros, zeros,
                tf.zeros([tasks, self.memory_width]))

    def step(self, state, features, previous_labels):
        """One time step for a batch of sequences → (new state, logits `[batch, max_ways]`)."""
        hidden, cell, memory, usage, read_weights, read = state
        inputs = tf.concat([features, tf.one_hot(previous_labels, self.max_ways, dtype=features.dtype), read], -1)
        hidden, (hidden, cell) = self.controller(inputs, [hidden, cell])
        key = self.key_layer(hidden)
        strength = 1.0 + tf.nn.softplus(self.strength_layer(hidden))
        memory, usage, read_weights, read = lrua_step(memory, usage, read_weights, key, self.gate_layer(hidden),
                                                      strength, self.usage_decay, self.read_before_write)
        logits = self.classifier(tf.concat([hidden, read], -1))
        return (hidden, cell, memory, usage, read_weights, read), logits

    def run_sequence(self, features, labels):
        """Presents `features [tasks, n, d]` with `labels [tasks, n]` one step late (label −1: none, at t = 0).

        Returns:
            (final state, per-step logits `[tasks, n, max_ways]`).
        """
        previous = tf.concat([-tf.ones_like(labels[:, :1]), labels[:, :-1]], axis=1)

        def scan_step(carry, inputs):
            state, _ = carry
            return self.step(state, *inputs)

        tasks = tf.shape(features)[0]
        first = (self.initial_state(tasks), tf.zeros([tasks, self.max_ways]))
        states, logits = tf.scan(scan_step, (tf.transpose(features, [1, 0, 2]), tf.transpose(previous)), first)
        return tuple(part[-1] for part in states), tf.transpose(logits, [1, 0, 2])

    def classify_queries(self, state, last_labels, query_features):
        """Each query one step after the support sequence's `state`, in parallel → logits `[tasks, q, max_ways]`."""
        queries = tf.shape(query_features)[1]
        repeated = tuple(tf.repeat(part, queries, axis=0) for part in state)
        flat = tf.reshape(query_features, [-1, query_features.shape[-1]])
        _, logits = self.step(repeated, flat, tf.repeat(last_labels, queries))
        return tf.reshape(logits, [-1, queries, self.max_ways])

    def checked_support_labels(self, labels):
        labels = tf.cast(labels, tf.int32)
        check = tf.debugging.assert_less(tf.reduce_max(labels), self.max_ways, message=(
            f"this MANN classifies at most {self.max_ways} classes (max_ways): give a task with fewer classes, or "
            "train a model with a larger max_ways"))
        with tf.control_dependencies([check]):
            return tf.identity(labels)

    def meta_batch_learn(self, batch, training):
        images, labels = batch["support_images"], self.checked_support_labels(batch["support_labels"])
        query_images = batch["query_images"]
        support, queries = tf.shape(images)[1], tf.shape(query_images)[1]
        # One backbone call per task, as every episodic method: batch norm normalizes with the task's own images
        # (and a replica holding some of the tasks computes what one device does).
        features = tf.stack([self.backbone(tf.concat([images[task], query_images[task]], 0), training=training)
                             for task in range(images.shape[0])])
        support_features, query_features = features[:, :support], features[:, support:]
        order = sequence_order(images, self.order_seed)
        support_features = tf.gather(support_features, order, batch_dims=1)
        labels = tf.gather(labels, order, batch_dims=1)
        state, support_logits = self.run_sequence(support_features, labels)
        # Scored over the task's classes only: logits `[tasks, queries, ways]` as every episodic method returns.
        ways = tf.reduce_max(labels) + 1
        logits = self.classify_queries(state, labels[:, -1], query_features)[..., :ways]
        support_logits = support_logits[..., :ways]
        query_labels = tf.cast(batch["query_labels"], tf.int32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=query_labels, logits=logits)
        total, count = tf.reduce_sum(losses, -1), tf.cast(queries, tf.float32)
        if self.support_loss and training:
            seen = tf.reduce_any(tf.logical_and(
                tf.equal(labels[:, :, tf.newaxis], labels[:, tf.newaxis, :]),
                tf.range(support)[:, tf.newaxis] > tf.range(support)[tf.newaxis, :]), axis=-1)
            seen = tf.cast(seen, tf.float32)
            support_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=support_logits)
            total += tf.reduce_sum(support_losses * seen, -1)
            count += tf.reduce_sum(seen, -1)
        return total / count, logits

    def get_config(self):
        return {**super().get_config(), "max_ways": self.max_ways, "controller_units": self.controller_units,
                "memory_slots": self.memory_slots, "memory_width": self.memory_width,
                "usage_decay": self.usage_decay, "support_loss": self.support_loss, "order_seed": self.order_seed,
                "read_before_write": self.read_before_write}
