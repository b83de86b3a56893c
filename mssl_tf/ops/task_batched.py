"""Run a plain conv network for many tasks at once, each task with its own (fast) weights.

MAML's inner loop gives every task of a meta-batch its own weights, so a naive implementation runs the
network once per task. Here the tasks are stacked on the channel axis and every convolution becomes a
grouped convolution (one group per task): one kernel call serves the whole meta-batch, forward and
backward, to any order of differentiation. Dense layers become batched matmuls.

Supported layers (the few-shot backbones): InputLayer, Conv2D (channels_last, no dilation/groups),
BatchNormalization, ReLU / Activation, MaxPooling2D / AveragePooling2D, Flatten, Dense, nested
Sequential/functional chains of these. `supports(model)` says whether a model qualifies, and is False where
TensorFlow cannot differentiate a grouped convolution (`grouped_convolution_gradients()`: e.g. CPUs on which
oneDNN is off by default, such as AMD ones; MAML then runs its tasks with `stateless_call`, same numbers).
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from mssl_tf.backbones.fused_batch_norm import fused_batch_norm

_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_PASSIVE = (keras.layers.InputLayer,)


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a chain model, nested models expanded, in call order."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(leaf_layers(layer))
        else:
            layers.append(layer)
    return layers


@functools.cache
def grouped_convolution_gradients() -> bool:
    """Whether this TensorFlow build differentiates grouped convolutions on the default device.

    Without oneDNN, TensorFlow's CPU kernels compute grouped convolutions forward but not their gradients
    ("Gradients for grouped convolutions are not supported on CPU").
    """

    @tf.function
    def gradients():
        images, kernel = tf.ones([1, 3, 3, 2]), tf.ones([3, 3, 1, 2])  # two groups of one channel
        return tf.gradients(tf.nn.conv2d(images, kernel, strides=1, padding="SAME"), [images, kernel])

    with tf.init_scope():  # run now, even when first asked while a model is built inside a traced function
        try:
            gradients()
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def supports(model: keras.Model) -> bool:
    """True when every layer is one this module can run per task (see module docstring) and grouped convolutions
    can be differentiated here."""
    layers = leaf_layers(model)
    if any(isinstance(layer, keras.layers.Conv2D) for layer in layers) and not grouped_convolution_gradients():
        return False
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            config = layer.get_config()
            if config["groups"] != 1 or tuple(config["dilation_rate"]) != (1, 1):
                return False
            if config["data_format"] != "channels_last":
                return False
        elif isinstance(layer, keras.layers.BatchNormalization):
            if layer.axis not in (-1, 3) or not (layer.center and layer.scale):
                return False
        elif not isinstance(
            layer, (*_POOLS, *_PASSIVE, keras.layers.ReLU, keras.layers.Activation, keras.layers.Flatten,
                    keras.layers.Dense)
        ):
            return False
    return True


def _to_groups(x):
    """`[tasks, n, H, W, C]` → `[n, H, W, tasks*C]`."""
    shape = tf.shape(x)
    channels = x.shape[-1]
    return tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [shape[1], shape[2], shape[3], x.shape[0] * channels])


def _from_groups(x, tasks):
    """`[n, H, W, tasks*C]` → `[tasks, n, H, W, C]`."""
    shape = tf.shape(x)
    return tf.transpose(tf.reshape(x, [shape[0], shape[1], shape[2], tasks, x.shape[-1] // tasks]), [3, 0, 1, 2, 4])


def forward(model: keras.Model, weights: dict[str, tf.Tensor], images: tf.Tensor, training: bool = True):
    """Runs `model` on `images [tasks, n, ...]`, task t with weights `weights[path][t]`.

    Args:
        model: a chain model that `supports()` accepts.
        weights: variable path → tensor `[tasks, *variable.shape]`. Variables missing here (e.g. BN moving
            statistics) are read from the model and shared by all tasks.
        images: `[tasks, n, H, W, C]`.
        training: batch norm uses per-task batch statistics when True, moving statistics when False.

    Returns:
        Outputs `[tasks, n, ...]`.
    """
    tasks = images.shape[0]

    def weight(variable):
        if variable.path in weights:
            return weights[variable.path]
        return tf.broadcast_to(variable.value[tf.newaxis], [tasks, *variable.shape])

    x = _to_groups(images)  # grouped layout until Flatten, then [tasks, n, features]
    grouped = True
    for layer in leaf_layers(model):
        if isinstance(layer, _PASSIVE):
            continue
        if isinstance(layer, keras.layers.Conv2D):
            kernel = weight(layer.kernel)  # [tasks, kh, kw, cin, cout]
            kh, kw, cin, cout = kernel.shape[1:]
            kernel = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, cin, tasks * cout])
            x = tf.nn.conv2d(x, kernel, strides=layer.strides, padding=layer.padding.upper())
            if layer.use_bias:
                x = x + tf.reshape(weight(layer.bias), [tasks * cout])
            x = layer.activation(x)
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma = tf.reshape(weight(layer.gamma), [-1])
            beta = tf.reshape(weight(layer.beta), [-1])
            if training:
                x, _, _ = fused_batch_norm(x, gamma, beta, layer.epsilon)
            else:
                mean = tf.reshape(weight(layer.moving_mean), [-1])
                variance = tf.reshape(weight(layer.moving_variance), [-1])
                x = tf.nn.batch_normalization(x, mean, variance, beta, gamma, layer.epsilon)
        elif isinstance(layer, keras.layers.ReLU):
            x = layer(x)
        elif isinstance(layer, keras.layers.Activation):
            x = layer.activation(x)
        elif isinstance(layer, _POOLS):
            pool = tf.nn.max_pool2d if isinstance(layer, keras.layers.MaxPooling2D) else tf.nn.avg_pool2d
            x = pool(x, layer.pool_size, layer.strides, layer.padding.upper())
        elif isinstance(layer, keras.layers.Flatten):
            if grouped:
                x = _from_groups(x, tasks)
                grouped = False
            x = tf.reshape(x, [tasks, tf.shape(x)[1], -1])
        elif isinstance(layer, keras.layers.Dense):
            if grouped:
                raise ValueError("task_batched.forward: a Dense layer must follow a Flatten layer")
            x = tf.matmul(x, weight(layer.kernel))
            if layer.use_bias:
                x = x + weight(layer.bias)[:, tf.newaxis, :]
            x = layer.activation(x)
        else:
            raise ValueError(f"task_batched.forward does not support layer {layer.name} ({type(layer).__name__})")
    return _from_groups(x, tasks) if grouped else x
