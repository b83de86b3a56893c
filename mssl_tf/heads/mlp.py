"""Projection and prediction MLPs of self-supervised methods, as one small serializable layer."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="mssl_tf")
class MLPHead(keras.layers.Layer):
    """[Dense → batch norm → ReLU] per hidden layer, then Dense (optionally followed by batch norm).

    Batch norm is synchronized across replicas by default (Keras' `synchronized=True`, TensorFlow backend): under
    `MirroredStrategy` the statistics are those of the global batch, as on one device, which is what SimCLR, BYOL
    and Barlow Twins prescribe for their heads (global batch norm); on one device it is plain batch norm.

    Args:
        hidden_units: width of each hidden layer (none: a linear head).
        output_units: output width.
        batch_norm: batch norm after every hidden Dense (which then has no bias).
        output_batch_norm: batch norm after the output Dense (SimSiam's projector).
        synchronized: synchronize batch-norm statistics across replicas.
    """

    def __init__(
        self,
        hidden_units=(256,),
        output_units: int = 128,
        batch_norm: bool = True,
        output_batch_norm: bool = False,
        synchronized: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(units) for units in hidden_units)
        self.output_units = int(output_units)
        self.batch_norm = bool(batch_norm)
        self.output_batch_norm = bool(output_batch_norm)
        self.synchronized = bool(synchronized)
        # === Layers ===
        self.stack = []
        for index, units in enumerate(self.hidden_units):
            self.stack.append(keras.layers.Dense(units, use_bias=not self.batch_norm, name=f"hidden{index}"))
            if self.batch_norm:
                self.stack.append(self.normalization(f"hidden{index}_bn"))
            self.stack.append(keras.layers.ReLU(name=f"hidden{index}_relu"))
        self.stack.append(keras.layers.Dense(self.output_units, use_bias=not self.output_batch_norm, name="output"))
        if self.output_batch_norm:
            self.stack.append(self.normalization("output_bn"))

    def normalization(self, name):
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=self.synchronized, name=name)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.stack:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=False):
        outputs = inputs
        for layer in self.stack:
            outputs = layer(outputs, training=training) if isinstance(layer, keras.layers.BatchNormalization) else (
                layer(outputs))
        return outputs

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.output_units)

    # === Config ===
    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "output_units": self.output_units,
            "batch_norm": self.batch_norm,
            "output_batch_norm": self.output_batch_norm,
            "synchronized": self.synchronized,
        }


def projection_head(input_dim: int, hidden_units=(256,), output_units: int = 128, name="projector", **options):
    """An `MLPHead` already built for `input_dim`-d features (so its variables exist at construction)."""
    head = MLPHead(hidden_units, output_units, name=name, **options)
    head.build((None, int(input_dim)))
    return head


def prediction_head(input_dim: int, hidden_units=(256,), name="predictor", **options):
    """BYOL / SimSiam predictor: an `MLPHead` mapping `input_dim` back to `input_dim`, already built."""
    return projection_head(input_dim, hidden_units, input_dim, name=name, **options)
