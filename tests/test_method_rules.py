"""Each method's defining rule on a tiny problem, against an expectation computed by hand in numpy.

MAML's meta-gradient has its own file (tests/test_maml.py). Here: Reptile's outer step and its support-only
evaluation, ANIL's head-only inner loop, Meta-SGD's per-parameter rates (applied and trained), Matching Networks'
full-context embeddings (Vinyals et al. 2016, section 2.1.2 and appendix A.2), Prototypical Networks' nearest
class mean, the memory network's error-driven writes and attention read, the hyper-network's emitted and
fine-tuned head, and transformation prediction's pretext labels. Backbones are an identity map on 3- or 4-d
inputs or a flattening of 4×4 images (the method's own arithmetic is all there is), or a single 3×3 convolution
on 4×4 images (ANIL needs a backbone with weights).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.methods import MAML, MatchingNet, ProtoNet, Reptile
from mssl_tf.methods.meta_ssl import HyperNetwork, MemoryNetwork
from mssl_tf.methods.ssl.transformation import TransformationPrediction
from mssl_tf.ops import task_batched

INNER_LEARNING_RATE = 0.5


# === Numpy references ===
def softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(-1, keepdims=True)


def sigmoid(values):
    return 1.0 / (1.0 + np.exp(-values))


def with_bias(features):
    """Appends a column of ones, so a classifier `[kernel; bias]` is one matrix."""
    return np.concatenate([features, np.ones((len(features), 1))], axis=1)


def cross_entropy_gradient(weights, features, labels):
    """Gradient of the mean softmax cross-entropy of `with_bias(features) @ weights` with respect to `weights`."""
    inputs = with_bias(features)
    probabilities = softmax(inputs @ weights)
    targets = np.eye(weights.shape[1])[labels]
    return inputs.T @ (probabilities - targets) / len(inputs)


def gradient_descent(weights, features, labels, steps, rate):
    """`steps` plain gradient steps of the classifier on the task's cross-entropy (`rate` scalar or per entry)."""
    for _ in range(steps):
        weights = weights - rate * cross_entropy_gradient(weights, features, labels)
    return weights


def classifier_matrix(classifier):
    """`[kernel; bias]` of a Dense layer as one float64 matrix."""
    return np.concatenate([classifier.kernel.numpy(), classifier.bias.numpy()[None]], axis=0).astype(np.float64)


# === Tiny problems ===
def identity_backbone(dimension=3):
    inputs = keras.Input((dimension,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def one_convolution_backbone():
    """4×4×1 images → one 3×3 convolution with 2 filters (tanh) → 8 features; runs on both MAML task paths."""
    inputs = keras.Input((4, 4, 1))
    features = keras.layers.Conv2D(2, 3, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Flatten()(features))


def tiny_batch(tasks=2, ways=2, shots=2, queries=3, shape=(3,), seed=0):
    """Random float tasks, class-major labels; queries are fresh points (not copies of the shots)."""
    rng = np.random.default_rng(seed)
    return {
        "support_images": tf.constant(rng.normal(size=(tasks, ways * shots, *shape)), tf.float32),
        "support_labels": tf.constant(np.tile(np.repeat(np.arange(ways), shots), (tasks, 1)), tf.int32),
        "query_images": tf.constant(rng.normal(size=(tasks, ways * queries, *shape)), tf.float32),
        "query_labels": tf.constant(np.tile(np.repeat(np.arange(ways), queries)[::-1].copy(), (tasks, 1)), tf.int32),
    }


def task_arrays(batch, task):
    return tuple(batch[key][task].numpy().astype(np.float64 if "images" in key else np.int64)
                 for key in ("support_images", "support_labels", "query_images", "query_labels"))


def linear_model(cls, seed=0, **options):
    """`cls` on an identity backbone with a seeded, non-trivial 3 → 2 classifier."""
    model = cls(identity_backbone(), ways=2, **options)
    rng = np.random.default_rng(seed)
    model.classifier.kernel.assign(rng.normal(size=(3, 2)).astype(np.float32))
    model.classifier.bias.assign(np.array([0.3, -0.2], np.float32))
    return model


def one_step(model, batch):
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)


# === Reptile (Nichol, Achiam & Schulman 2018) ===
def test_reptile_moves_the_initialization_towards_the_mean_adapted_weights():
    """θ ← θ + ε (mean_t φ_t − θ), φ_t = θ after k SGD steps on task t's support and query examples."""
    epsilon, steps = 0.25, 2
    model = linear_model(Reptile, inner_steps=steps, inner_learning_rate=INNER_LEARNING_RATE, first_order=True)
    model.compile(keras.optimizers.SGD(epsilon))  # SGD with rate ε on θ − mean φ is the paper's update
    batch = tiny_batch()
    initial = classifier_matrix(model.classifier)
    adapted = []
    for task in range(2):
        support, support_labels, query, query_labels = task_arrays(batch, task)
        adapted.append(gradient_descent(initial, np.concatenate([support, query]),
                                        np.concatenate([support_labels, query_labels]), steps, INNER_LEARNING_RATE))
    expected = initial + epsilon * (np.mean(adapted, axis=0) - initial)
    assert np.abs(expected - initial).max() > 0.05, "the example must move the initialization visibly"
    one_step(model, batch)
    np.testing.assert_allclose(classifier_matrix(model.classifier), expected, rtol=1e-5, atol=1e-6)


def test_reptile_evaluation_adapts_on_the_support_set_only():
    model = linear_model(Reptile, inner_steps=2, evaluation_inner_steps=3, inner_learning_rate=INNER_LEARNING_RATE,
                         first_order=True)
    batch = tiny_batch()
    initial = classifier_matrix(model.classifier)
    _, logits = model.meta_batch_learn(batch, training=False)
    for task in range(2):
        support, support_labels, query, _ = task_arrays(batch, task)
        adapted = gradient_descent(initial, support, support_labels, 3, INNER_LEARNING_RATE)
        np.testing.assert_allclose(logits[task], with_bias(query) @ adapted, rtol=1e-5, atol=1e-5)
    # The queries' labels never reach the prediction.
    relabelled = {**batch, "query_labels": 1 - batch["query_labels"]}
    np.testing.assert_array_equal(model.meta_batch_learn(relabelled, training=False)[1], logits)


# === ANIL (Raghu et al. 2020) ===
@pytest.mark.parametrize("task_batching", [True, False])
def test_anil_inner_loop_adapts_the_head_only(task_batching):
    keras.utils.set_random_seed(0)
    steps = 2
    model = MAML(one_convolution_backbone(), ways=2, inner_steps=steps, inner_learning_rate=INNER_LEARNING_RATE,
                 adapt="head", task_batching=task_batching)
    assert model.batched == (task_batching and task_batched.grouped_convolution_gradients())
    batch = tiny_batch(shape=(4, 4, 1), seed=1)
    fast, logits = model.adapt_tasks(batch["support_images"], batch["support_labels"], steps, batch["query_images"])
    assert set(fast) == {model.classifier.kernel.path, model.classifier.bias.path}
    initial = classifier_matrix(model.classifier)
    for task in range(2):
        support, support_labels, query, _ = task_arrays(batch, task)
        # The backbone keeps its meta-learned weights: its features are those of the unadapted model.
        support_features = model.backbone(support.astype(np.float32)).numpy().astype(np.float64)
        query_features = model.backbone(query.astype(np.float32)).numpy().astype(np.float64)
        adapted = gradient_descent(initial, support_features, support_labels, steps, INNER_LEARNING_RATE)
        np.testing.assert_allclose(logits[task], with_bias(query_features) @ adapted, rtol=1e-4, atol=1e-5)
    # Control: adapting every layer from the same weights gives visibly other predictions.
    everything = MAML(model.backbone, ways=2, inner_steps=steps, inner_learning_rate=INNER_LEARNING_RATE,
                      adapt="all", task_batching=task_batching)
    everything.classifier.set_weights(model.classifier.get_weights())
    _, all_logits = everything.adapt_tasks(batch["support_images"], batch["support_labels"], steps,
                                           batch["query_images"])
    assert np.abs(all_logits.numpy() - logits.numpy()).max() > 1e-2
    # The outer loop still trains the backbone (through the features).
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0])
    gradients = tape.gradient(loss, model.backbone.trainable_variables)
    assert all(gradient is not None and np.abs(gradient.numpy()).max() > 1e-6 for gradient in gradients)


# === Meta-SGD (Li et al. 2017) ===
def test_meta_sgd_applies_and_trains_its_per_parameter_rates():
    """φ = θ − α ⊙ ∇L_support(θ); for one step ∂L_query(φ)/∂α = −∇L_query(φ) ⊙ ∇L_support(θ)."""
    model = linear_model(MAML, inner_steps=1, inner_learning_rate=INNER_LEARNING_RATE, learn_inner_learning_rate=True)
    rng = np.random.default_rng(5)
    kernel_rates, bias_rates = rng.uniform(0.1, 1.5, (3, 2)), rng.uniform(0.1, 1.5, (2,))
    model.inner_learning_rates[0].assign(kernel_rates.astype(np.float32))
    model.inner_learning_rates[1].assign(bias_rates.astype(np.float32))
    rates = np.concatenate([kernel_rates, bias_rates[None]], axis=0)
    batch = tiny_batch()
    initial = classifier_matrix(model.classifier)
    expected_logits, rate_gradients = [], []
    for task in range(2):
        support, support_labels, query, query_labels = task_arrays(batch, task)
        support_gradient = cross_entropy_gradient(initial, support, support_labels)
        adapted = initial - rates * support_gradient
        expected_logits.append(with_bias(query) @ adapted)
        rate_gradients.append(-cross_entropy_gradient(adapted, query, query_labels) * support_gradient)
    expected_rate_gradient = np.mean(rate_gradients, axis=0)  # the meta-loss is the mean over tasks

    with tf.GradientTape() as tape:
        losses, logits = model.meta_batch_learn(batch, training=True)
        loss = tf.reduce_mean(losses)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)
    kernel_gradient, bias_gradient = tape.gradient(loss, model.inner_learning_rates)
    measured = np.concatenate([kernel_gradient.numpy(), bias_gradient.numpy()[None]], axis=0)
    np.testing.assert_allclose(measured, expected_rate_gradient, rtol=1e-4, atol=1e-6)
    assert np.abs(expected_rate_gradient).max() > 1e-3

    learning_rate = 0.5
    model.compile(keras.optimizers.SGD(learning_rate))
    one_step(model, batch)
    trained = np.concatenate([model.inner_learning_rates[0].numpy(), model.inner_learning_rates[1].numpy()[None]], 0)
    np.testing.assert_allclose(trained, rates - learning_rate * expected_rate_gradient, rtol=1e-5, atol=1e-6)


# === Prototypical Networks (Snell et al. 2017) ===
def test_protonet_classifies_by_squared_distance_to_class_means():
    model = ProtoNet(identity_backbone())
    batch = tiny_batch(ways=3, shots=3, queries=2)
    losses, logits = model.meta_batch_learn(batch, training=False)
    for task in range(2):
        support, support_labels, query, query_labels = task_arrays(batch, task)
        means = np.stack([support[support_labels == label].mean(axis=0) for label in range(3)])
        expected = -np.sum((query[:, None] - means[None]) ** 2, axis=-1)
        np.testing.assert_allclose(logits[task], expected, rtol=1e-5, atol=1e-5)
        expected_loss = -np.mean(np.log(softmax(expected)[np.arange(len(query)), query_labels]))
        assert float(losses[task]) == pytest.approx(expected_loss, rel=1e-5)


# === Matching Networks with full-context embeddings (Vinyals et al. 2016) ===
def lstm_step(inputs, hidden, cell, kernel, recurrent_kernel, bias):
    """One LSTM step, gates in Keras' order (input, forget, candidate, output)."""
    gates = inputs @ kernel + hidden @ recurrent_kernel + bias
    input_gate, forget_gate, candidate, output_gate = np.split(gates, 4, axis=-1)
    cell = sigmoid(forget_gate) * cell + sigmoid(input_gate) * np.tanh(candidate)
    hidden = sigmoid(output_gate) * np.tanh(cell)
    return hidden, cell


def lstm_weights(layer):
    return [weight.numpy().astype(np.float64) for weight in (layer.kernel, layer.recurrent_kernel, layer.bias)]


def lstm_sequence(sequence, weights):
    units = weights[1].shape[0]
    hidden, cell = np.zeros(units), np.zeros(units)
    outputs = []
    for element in sequence:
        hidden, cell = lstm_step(element, hidden, cell, *weights)
        outputs.append(hidden)
    return np.stack(outputs)


def full_context_embeddings(model, support, query):
    """g(x_i, S) = g'(x_i) + P [h→_i, h←_i] and f(x, S) = h_K of the attention LSTM, in numpy.

    g: a bidirectional LSTM over the support embeddings g'(x_i), its states at position i concatenated and
    projected by P (this library's variant of the paper's sum h→_i + h←_i), plus the skip connection.
    f: K steps of ĥ_k, c_k = LSTM([f'(x), r_{k−1}], h_{k−1}, c_{k−1}); h_k = ĥ_k + f'(x);
    r_{k−1} = Σ_i softmax_i(h_{k−1}ᵀ g(x_i)) g(x_i), from h_0 = f'(x), c_0 = 0.
    """
    cell_weights = lstm_weights(model.support_lstm.forward_layer.cell)
    forward = lstm_sequence(support, cell_weights)
    backward = lstm_sequence(support[::-1], lstm_weights(model.support_lstm.backward_layer.cell))[::-1]
    projection = model.support_projection.kernel.numpy().astype(np.float64)
    contextual_support = support + np.concatenate([forward, backward], axis=-1) @ projection
    query_weights = lstm_weights(model.query_cell)
    hidden, cell = query, np.zeros_like(query)
    for _ in range(model.processing_steps):
        readout = softmax(hidden @ contextual_support.T) @ contextual_support
        output, cell = lstm_step(np.concatenate([query, readout], axis=-1), hidden, cell, *query_weights)
        hidden = output + query
    return contextual_support, hidden


def cosine_attention_log_probabilities(support, support_labels, query, ways):
    unit = lambda values: values / np.linalg.norm(values, axis=-1, keepdims=True)  # noqa: E731
    attention = softmax(unit(query) @ unit(support).T)
    return np.log(attention @ np.eye(ways)[support_labels] + 1e-8)


def test_full_context_embeddings_follow_their_equations():
    keras.utils.set_random_seed(2)
    model = MatchingNet(identity_backbone(4), full_context_embeddings=True, processing_steps=2)
    batch = tiny_batch(tasks=1, ways=2, shots=2, queries=2, shape=(4,), seed=3)
    support, support_labels, query, _ = task_arrays(batch, 0)
    expected_support, expected_query = full_context_embeddings(model, support, query)
    measured_support, measured_query = model.contextual_embeddings(tf.constant(support, tf.float32),
                                                                   tf.constant(query, tf.float32))
    np.testing.assert_allclose(measured_support, expected_support, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(measured_query, expected_query, rtol=1e-4, atol=1e-5)
    # The context is visible: the embeddings moved away from the plain backbone features.
    assert np.abs(expected_support - support).max() > 0.05 and np.abs(expected_query - query).max() > 0.05
    _, logits = model.meta_batch_learn(batch, training=False)
    np.testing.assert_allclose(
        logits[0], cosine_attention_log_probabilities(expected_support, support_labels, expected_query, 2),
        rtol=1e-4, atol=1e-4,
    )
    plain = cosine_attention_log_probabilities(support, support_labels, query, 2)
    assert np.abs(logits[0].numpy() - plain).max() > 1e-2, "FCE must change the predictions of this example"


# === Memory network (mssl_tf/methods/meta_ssl/memory.py) ===
def memory_read(query_keys, keys, values, strengths, temperature, empty_score, exclude_self=False):
    """p(y | q) = (Σ_i s_i e^{T<q, k_i>} v_i + e^{empty} / ways) / (Σ_i s_i e^{T<q, k_i>} + e^{empty})."""
    weights = strengths[None] * np.exp(temperature * query_keys @ keys.T)
    if exclude_self:
        weights = weights * (1 - np.eye(len(keys)))
    empty = np.exp(empty_score)
    ways = values.shape[1]
    return (weights @ values + empty / ways) / (weights.sum(axis=1, keepdims=True) + empty)


def memory_predictions(model, support, support_labels, query, passes):
    unit = lambda values: values / np.linalg.norm(values, axis=-1, keepdims=True)  # noqa: E731
    projection = model.key_projection.kernel.numpy().astype(np.float64)
    gate_kernel, gate_bias = (weight.numpy().astype(np.float64) for weight in model.write_gate.weights)
    temperature, empty_score = np.exp(float(model.log_temperature.numpy())), float(model.empty_score.numpy())
    keys, query_keys = unit(support @ projection), unit(query @ projection)
    values = np.eye(support_labels.max() + 1)[support_labels]
    gates = sigmoid(support @ gate_kernel + gate_bias)[:, 0]
    strengths = np.zeros(len(support))
    for _ in range(passes):  # error-driven: a slot grows by gate × how badly the rest of the memory predicts it
        read = memory_read(keys, keys, values, strengths, temperature, empty_score, exclude_self=True)
        strengths = strengths + gates * (1.0 - np.sum(read * values, axis=1))
    return memory_read(query_keys, keys, values, strengths, temperature, empty_score), strengths


@pytest.mark.parametrize("passes", [0, 1, 3])
def test_memory_network_writes_by_surprise_and_reads_by_attention(passes):
    model = MemoryNetwork(identity_backbone(), write_passes=passes)
    rng = np.random.default_rng(4)
    model.key_projection.kernel.assign(rng.normal(size=(3, 3)).astype(np.float32))
    model.write_gate.kernel.assign(rng.normal(size=(3, 1)).astype(np.float32))
    model.log_temperature.assign(np.log(3.0))
    model.empty_score.assign(0.5)
    batch = tiny_batch(tasks=1, ways=3, shots=2, queries=2, seed=6)
    support, support_labels, query, _ = task_arrays(batch, 0)
    expected, strengths = memory_predictions(model, support, support_labels, query, passes)
    _, logits = model.meta_batch_learn(batch, training=True)
    np.testing.assert_allclose(np.exp(logits[0]), expected, rtol=1e-4, atol=1e-6)
    if passes == 0:  # an empty memory predicts chance
        np.testing.assert_allclose(expected, 1 / 3)
    if passes == 3:  # the passes differ: later writes follow the error left by the earlier ones
        _, one_pass = memory_predictions(model, support, support_labels, query, 1)
        assert np.abs(strengths / strengths.sum() - one_pass / one_pass.sum()).max() > 1e-2


# === Hyper-network (mssl_tf/methods/meta_ssl/hypernetwork.py) ===
def emitted_head(model, support, support_labels):
    """w_c = 2 p_c + Δw_c, b_c = −|p_c|² + Δb_c, (Δw_c, Δb_c) = MLP([p_c, mean_c' p_c'])."""
    ways = support_labels.max() + 1
    prototypes = np.stack([support[support_labels == label].mean(axis=0) for label in range(ways)])
    activations = np.concatenate([prototypes, np.repeat(prototypes.mean(axis=0, keepdims=True), ways, 0)], -1)
    layers = model.generator.layers
    for index, layer in enumerate(layers):
        kernel, bias = (weight.numpy().astype(np.float64) for weight in layer.weights)
        activations = activations @ kernel + bias
        if index < len(layers) - 1:
            activations = np.maximum(activations, 0.0)
    dimension = support.shape[1]
    return 2 * prototypes + activations[:, :dimension], -np.sum(prototypes**2, axis=1) + activations[:, dimension]


def head_gradients(weights, biases, features, labels):
    """Gradients of the mean cross-entropy of `features @ weightsᵀ + biases` w.r.t. the head."""
    error = (softmax(features @ weights.T + biases) - np.eye(len(biases))[labels]) / len(features)
    return error.T @ features, error.sum(axis=0)


def test_untrained_hypernetwork_emits_the_prototype_classifier():
    """The generator's last layer starts at zero: logits = 2 q·p_c − |p_c|² = |q|² − |q − p_c|² (ProtoNet + const)."""
    model = HyperNetwork(identity_backbone(), hidden_units=(5,))
    batch = tiny_batch(tasks=1, ways=3, shots=2, queries=2, seed=7)
    support, support_labels, query, _ = task_arrays(batch, 0)
    means = np.stack([support[support_labels == label].mean(axis=0) for label in range(3)])
    expected = np.sum(query**2, axis=1, keepdims=True) - np.sum((query[:, None] - means[None]) ** 2, axis=-1)
    _, logits = model.meta_batch_learn(batch, training=False)
    np.testing.assert_allclose(logits[0], expected, rtol=1e-5, atol=1e-5)


def test_hypernetwork_emits_a_head_from_class_means_and_fine_tunes_it_with_its_learned_rates():
    keras.utils.set_random_seed(8)
    steps = 2
    model = HyperNetwork(identity_backbone(), hidden_units=(5,), inner_steps=steps)
    rng = np.random.default_rng(9)
    for layer in model.generator.layers:  # a trained-looking generator (its last layer starts at zero)
        for weight in layer.weights:
            weight.assign(rng.normal(scale=0.5, size=weight.shape).astype(np.float32))
    model.inner_learning_rates[0].assign(0.3)
    model.inner_learning_rates[1].assign(0.7)
    batch = tiny_batch(tasks=1, ways=3, shots=2, queries=2, seed=10)
    support, support_labels, query, query_labels = task_arrays(batch, 0)
    initial_weights, initial_biases = emitted_head(model, support, support_labels)
    weights, biases = initial_weights, initial_biases
    for _ in range(steps):
        weight_gradient, bias_gradient = head_gradients(weights, biases, support, support_labels)
        weights, biases = weights - 0.3 * weight_gradient, biases - 0.7 * bias_gradient
    with tf.GradientTape() as tape:
        losses, logits = model.meta_batch_learn(batch, training=True)
        loss = losses[0]
    np.testing.assert_allclose(logits[0], query @ weights.T + biases, rtol=1e-4, atol=1e-5)
    # The step sizes are trained: with one step, ∂L_query/∂r_w = −Σ ∇_w L_query(w') ⊙ ∇_w L_support(w).
    assert all(rate.trainable for rate in model.inner_learning_rates)
    rate_gradients = tape.gradient(loss, model.inner_learning_rates)
    assert all(gradient is not None and abs(float(gradient)) > 1e-4 for gradient in rate_gradients)
    model.inner_steps = 1
    with tf.GradientTape() as tape:
        loss = model.meta_batch_learn(batch, training=True)[0][0]
    measured = [float(gradient) for gradient in tape.gradient(loss, model.inner_learning_rates)]
    support_weight_gradient, support_bias_gradient = head_gradients(initial_weights, initial_biases, support,
                                                                    support_labels)
    adapted_weights = initial_weights - 0.3 * support_weight_gradient
    adapted_biases = initial_biases - 0.7 * support_bias_gradient
    query_weight_gradient, query_bias_gradient = head_gradients(adapted_weights, adapted_biases, query, query_labels)
    expected = [-np.sum(query_weight_gradient * support_weight_gradient),
                -np.sum(query_bias_gradient * support_bias_gradient)]
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-7)


# === Transformation prediction (after Gidaris et al. 2018) ===
NUMPY_TRANSFORMATIONS = {
    "rot0": lambda image: image,
    "rot90": lambda image: np.rot90(image, 1),  # counter-clockwise, as tf.image.rot90
    "rot180": lambda image: np.rot90(image, 2),
    "rot270": lambda image: np.rot90(image, 3),
    "hflip": lambda image: image[:, ::-1],
    "vflip": lambda image: image[::-1],
    "downsample": lambda image: np.kron(image.reshape(2, 2, 2, 2).mean(axis=(1, 3)), np.ones([2, 2])),  # 4×4
}


def test_transformation_prediction_classifies_which_transformation_was_applied():
    """Loss = mean cross-entropy of classifier(backbone(t(x))) against t's index, over every image and transformation."""
    inputs = keras.Input((4, 4, 1))
    model = TransformationPrediction(keras.Model(inputs, keras.layers.Flatten()(inputs)), hidden_units=())
    assert model.transformations == tuple(NUMPY_TRANSFORMATIONS)
    rng = np.random.default_rng(11)
    kernel, bias = rng.normal(size=(16, 7)), rng.normal(size=7)
    model.classifier.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    images = rng.random((3, 4, 4))
    rows, labels = [], []
    for index, transform in enumerate(NUMPY_TRANSFORMATIONS.values()):
        rows.extend(transform(image).ravel() for image in images)
        labels.extend([index] * len(images))
    logits = np.stack(rows) @ kernel + bias
    expected = -np.mean(np.log(softmax(logits)[np.arange(len(labels)), labels]))
    loss, features = model.compute_ssl_loss([tf.constant(images[..., None], tf.float32)], training=False)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(features, images.reshape(3, 16), atol=1e-6)  # the untransformed images' features
