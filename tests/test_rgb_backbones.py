"""ResNet-12/18/50 backbones: shapes, parameter counts derived by hand, one training step, `.keras` round trip."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.backbones import BACKBONES, FusedBatchNormalization, build_backbone
from mssl_tf.backbones.resnet import resnet12, resnet18, resnet50

# name → (builder, options, feature size, last feature map layer, its shape). Every code path, at small sizes.
CASES = {
    "resnet18 cifar stem 32x32": (resnet18, {"input_shape": (32, 32, 3)}, 512, "stage4_block2_out", (4, 4, 512)),
    "resnet18 imagenet stem 64x64": (resnet18, {"input_shape": (64, 64, 3), "stem": "imagenet", "width": 16}, 128,
                                     "stage4_block2_out", (2, 2, 128)),
    "resnet12 omniglot": (resnet12, {"input_shape": (28, 28, 1), "widths": (8, 16, 32, 64)}, 64, "block4_pool",
                          (1, 1, 64)),
    "resnet50 32x32": (resnet50, {"input_shape": (32, 32, 3)}, 2048, "conv5_block3_out", (1, 1, 2048)),
}

def trainable_count(model):
    return sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_training_step_and_keras_round_trip(case, tmp_path):
    builder, options, features, last_map, last_map_shape = CASES[case]
    keras.utils.set_random_seed(3)
    backbone = builder(**options)
    images = tf.random.stateless_uniform([4, *backbone.input_shape[1:]], seed=[4, 5])
    assert backbone.output_shape == (None, features)
    assert backbone(images).shape == (4, features)
    assert backbone.get_layer(last_map).output.shape[1:] == last_map_shape
    assert all(type(layer) is not keras.layers.BatchNormalization for layer in backbone.layers)

    head = keras.layers.Dense(4)
    labels = tf.constant([0, 1, 2, 3])

    def loss():
        logits = head(backbone(images, training=True))
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))

    with tf.GradientTape() as tape:
        before = loss()
    variables = backbone.trainable_variables + head.trainable_variables
    gradients = tape.gradient(before, variables)
    for variable, gradient in zip(variables, gradients):
        assert np.isfinite(gradient).all(), variable.path
        # resnet50 (keras.applications) has conv biases right before batch norm, which cancels them.
        if variable.name != "bias":
            assert np.abs(gradient).max() > 0, f"no gradient reaches {variable.path}"
    # A step whose first-order decrease is 1% of the loss: gradients are ~1e5 on ResNet-50 with 4 images (batch
    # norm over 4 values in its 1x1 last stage), ~10 on the others.
    learning_rate = 0.01 * float(before) / float(tf.linalg.global_norm(gradients)) ** 2
    keras.optimizers.SGD(learning_rate).apply_gradients(zip(gradients, variables))
    assert float(loss()) < float(before)

    backbone.save(tmp_path / "backbone.keras")
    restored = keras.saving.load_model(tmp_path / "backbone.keras")
    assert json.dumps(restored.get_config()) == json.dumps(backbone.get_config())
    moving_mean = next(layer for layer in backbone.layers if isinstance(layer, FusedBatchNormalization)).moving_mean
    assert np.abs(moving_mean).max() > 0, "the training step updated the moving statistics that must round-trip"
    np.testing.assert_allclose(restored(images), backbone(images), atol=1e-6)


def test_resnet18_parameter_counts_and_stems():
    """torchvision's ResNet-18 has 11,689,512 parameters; without the 512x1000 + 1000 classifier, 11,176,512.
    The CIFAR stem swaps its 7x7x3x64 convolution (9,408) for a 3x3x3x64 one (1,728): 11,168,832."""
    stl10 = resnet18((96, 96, 3))
    assert trainable_count(stl10) == 11_176_512
    assert stl10.get_layer("stem_pool").output.shape[1:] == (24, 24, 64)
    assert stl10.get_layer("stage4_block2_out").output.shape[1:] == (3, 3, 512)
    cifar = resnet18((32, 32, 3))
    assert trainable_count(cifar) == 11_168_832
    assert "stem_pool" not in [layer.name for layer in cifar.layers]
    assert cifar.get_layer("stem_relu").output.shape[1:] == (32, 32, 64)


def test_resnet12_parameter_count_by_hand():
    """Per block (c_in → c): 9·c_in·c + 2·9·c·c convolutions, a c_in·c shortcut, 4 batch norms of 2·c."""
    widths, expected, channels = (64, 160, 320, 640), 0, 3
    for width in widths:
        expected += 9 * channels * width + 2 * 9 * width * width + channels * width + 4 * 2 * width
        channels = width
    assert expected == 12_424_320
    mini_imagenet = resnet12((84, 84, 3))
    assert trainable_count(mini_imagenet) == expected
    assert mini_imagenet.get_layer("block4_pool").output.shape[1:] == (5, 5, 640)
    assert mini_imagenet.output_shape == (None, 640)


def test_resnet50_is_keras_applications_resnet50_with_fused_batch_norm():
    """Same layers and weights give the same features. In training mode on 64x64 images (the last stage's batch
    norm over 2x2x4 values) the two batch norms agree to float32 rounding; on 1x1 maps of 3 images Keras'
    E[x^2] - E[x]^2 variance loses precision and they would not."""
    keras.utils.set_random_seed(6)
    reference = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    backbone = resnet50((64, 64, 3))
    assert backbone.count_params() == reference.count_params() == 23_587_712
    assert backbone.layers[0].name == "images"
    assert [layer.name for layer in backbone.layers[1:-1]] == [layer.name for layer in reference.layers[1:]]
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, FusedBatchNormalization)]
    assert len(batch_norms) == 53 and batch_norms[0].epsilon == 1.001e-5
    backbone.set_weights(reference.get_weights())
    images = tf.random.stateless_uniform([4, 64, 64, 3], seed=[7, 8])
    np.testing.assert_allclose(backbone(images), reference(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backbone(images, training=True), reference(images, training=True), rtol=1e-3,
                               atol=2e-3)


def test_registry_names_and_clear_errors():
    assert {"resnet12", "resnet18", "resnet50"} <= set(BACKBONES)
    assert build_backbone("resnet18", input_shape=(96, 96, 3)).output_shape == (None, 512)
    with pytest.raises(ValueError, match="stem 'cifar10'"):
        resnet18(stem="cifar10")
    with pytest.raises(ValueError, match="at least 32x32"):
        resnet50((28, 28, 1))
