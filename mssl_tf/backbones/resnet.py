"""Residual networks for natural images: ResNet-12 (few-shot), ResNet-18 (CIFAR-style) and ResNet-50.

All three are functional `keras.Model`s mapping channels-last float images to one feature vector per image
(global average pooling after the last stage), like `conv4`. ResNet-12 and ResNet-18 are built here with the
project's `FusedBatchNormalization` (momentum 0.9, epsilon 1e-5, as Conv-4); ResNet-50 is
`keras.applications.ResNet50` without downloaded weights, its batch norms swapped for the fused layer. No
preprocessing is inside: feed images scaled as the data pipeline gives them (e.g. [0, 1]).
"""

from __future__ import annotations

import keras

from mssl_tf.backbones.conv4 import check_image_size
from mssl_tf.backbones.fused_batch_norm import FusedBatchNormalization

STEMS = ("cifar", "imagenet")


def _batch_norm(name: str) -> FusedBatchNormalization:
    return FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _basic_block(x, filters: int, strides: int, name: str):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut (He et al. 2016)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv")(x)
        shortcut = _batch_norm(f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    x = _batch_norm(f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(x)
    x = _batch_norm(f"{name}_bn2")(x)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet18(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    stem: str | None = None,
    width: int = 64,
    name: str = "resnet18",
) -> keras.Model:
    """Builds ResNet-18 (He et al. 2016): a stem, then 4 stages of 2 basic blocks, then global average pooling.

    Stage widths are `width` x (1, 2, 4, 8), the first stage at stride 1 and the others at stride 2; the output
    is a `8 * width`-d feature vector (512-d by default) for any input size.

    Stems:
      - `"cifar"`: 3x3 convolution at stride 1, batch norm, ReLU, no max-pool — the standard for 32x32 images
        in self-supervised learning (SimCLR's CIFAR-10 variant; solo-learn, lightly).
      - `"imagenet"`: 7x7 convolution at stride 2, batch norm, ReLU, 3x3 max-pool at stride 2 — the original
        ResNet stem, for 96x96 (STL-10) and larger inputs.

    Args:
        input_shape: image shape, channels last.
        stem: `"cifar"`, `"imagenet"`, or None to pick `"cifar"` for images up to 64 pixels on a side and
            `"imagenet"` above.
        width: channels of the stem and of the first stage.
        name: model name.

    Returns:
        A functional `keras.Model` mapping images `[batch, *input_shape]` to features `[batch, 8 * width]`.

    Example:
        >>> resnet18((96, 96, 3)).output_shape  # ImageNet stem chosen for 96x96
        (None, 512)
    """
    if stem is None:
        stem = "cifar" if min(input_shape[:2]) <= 64 else "imagenet"
    if stem not in STEMS:
        raise ValueError(f"Unknown ResNet stem {stem!r}; expected one of {STEMS} (or None to pick by input size)")
    images = keras.Input(shape=tuple(input_shape), name="images")
    if stem == "cifar":
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(images)
    else:
        x = keras.layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(images)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem == "imagenet":
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, multiplier in enumerate((1, 2, 4, 8)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width * multiplier, strides, name=f"stage{stage + 1}_block{block + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(images, features, name=name)


def resnet12(
    input_shape: tuple[int, int, int] = (84, 84, 3),
    widths: tuple[int, ...] = (64, 160, 320, 640),
    negative_slope: float = 0.1,
    name: str = "resnet12",
) -> keras.Model:
    """Builds ResNet-12, the few-shot standard (Oreshkin et al. 2018; Lee et al. 2019, MetaOptNet).

    Four residual blocks, each three [3x3 convolution, batch norm, leaky ReLU] (the last activation after the
    addition) with a 1x1 convolution + batch norm shortcut, then a 2x2 max-pool; global average pooling at the
    end (as RFS and FEAT; MetaOptNet flattens instead). DropBlock is not included. On 84x84 inputs the last
    feature map is 5x5 and the output is 640-d with the default widths.

    Args:
        input_shape: image shape, channels last (84x84x3 for miniImageNet; 28x28x1 works for Omniglot).
        widths: channels of the four blocks (MetaOptNet's (64, 160, 320, 640) by default; TADAM used
            (64, 128, 256, 512)).
        negative_slope: slope of the leaky ReLU for negative inputs.
        name: model name.

    Returns:
        A functional `keras.Model` mapping images `[batch, *input_shape]` to features `[batch, widths[-1]]`.

    Raises:
        ValueError: when the images are smaller than `2 ** len(widths)` pixels on a side (each block halves them).
    """
    check_image_size(name, input_shape, 2 ** len(widths), f"{len(widths)} blocks each end in a 2x2 max-pool")
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = images
    for block, filters in enumerate(widths, start=1):
        prefix = f"block{block}"
        shortcut = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_shortcut_conv")(x)
        shortcut = _batch_norm(f"{prefix}_shortcut_bn")(shortcut)
        for layer in (1, 2, 3):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv{layer}")(x)
            x = _batch_norm(f"{prefix}_bn{layer}")(x)
            if layer < 3:
                x = keras.layers.LeakyReLU(negative_slope, name=f"{prefix}_relu{layer}")(x)
        x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
        x = keras.layers.LeakyReLU(negative_slope, name=f"{prefix}_out")(x)
        x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(images, features, name=name)


def resnet50(input_shape: tuple[int, int, int] = (32, 32, 3), name: str = "resnet50") -> keras.Model:
    """Builds ResNet-50 (He et al. 2016) from `keras.applications.ResNet50`, randomly initialized.

    `keras.applications.ResNet50(weights=None, include_top=False, pooling="avg")`: the ImageNet stem (7x7
    convolution at stride 2, 3x3 max-pool) and 4 stages of bottleneck blocks, 2048-d features. Nothing is
    downloaded. Its batch-norm layers are rebuilt as `FusedBatchNormalization` with the same configuration
    (Keras' epsilon 1.001e-5 and momentum 0.99 kept), which computes the same values with the fused kernel.

    Args:
        input_shape: image shape, channels last, at least 32x32 (Keras' minimum for ResNet50).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images `[batch, *input_shape]` to features `[batch, 2048]`.
    """
    check_image_size(name, input_shape, 32, "keras.applications.ResNet50's minimum")
    applications_model = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=tuple(input_shape)
    )

    def clone_layer(layer):
        config = layer.get_config()
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    images = keras.Input(shape=tuple(input_shape), name="images")
    cloned = keras.models.clone_model(applications_model, input_tensors=images, clone_function=clone_layer)
    features = keras.layers.Identity(name="features")(cloned.outputs[0])
    return keras.Model(images, features, name=name)
