"""Conv-4: the few-shot standard backbone (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017)."""

from __future__ import annotations

import keras

from mssl_tf.backbones.fused_batch_norm import FusedBatchNormalization


def check_image_size(name: str, input_shape, minimum: int, why: str) -> None:
    """Raises ValueError naming the backbone, its smallest image size and the received shape."""
    if min(input_shape[:2]) < minimum:
        raise ValueError(f"{name} needs images of at least {minimum}x{minimum} pixels ({why}); got "
                         f"input_shape={tuple(input_shape)}: use a larger --image-size or another --backbone")


def conv4(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    filters: int = 64,
    blocks: int = 4,
    pool_padding: str = "valid",
    name: str = "conv4",
) -> keras.Model:
    """Builds Conv-4: `blocks` x [3x3 conv (`filters`), batch norm, ReLU, 2x2 max-pool], then flatten.

    (Computed as conv, batch norm, max-pool, ReLU: the same function, cheaper.)

    On 28x28 inputs the output is a 64-d feature vector (1x1x64); with `pool_padding="same"` (PyTorch's
    `ceil_mode=True`, as in PsCo's reference Conv-4) the sizes go 28→14→7→4→2 and the output is 256-d (2x2x64).

    Args:
        input_shape: image shape, channels last.
        filters: channels of every convolution.
        blocks: number of conv blocks.
        pool_padding: "valid" (floor: an odd side loses its last row/column) or "same" (ceil: it is kept).
        name: model name.

    Returns:
        A functional `keras.Model` mapping images to flat features.

    Raises:
        ValueError: when the images are smaller than `2 ** blocks` pixels on a side (each block halves them).
    """
    if pool_padding not in ("valid", "same"):
        raise ValueError(f"pool_padding={pool_padding!r}: use 'valid' (floor) or 'same' (ceil)")
    check_image_size(name, input_shape, 2**blocks, f"{blocks} blocks each halve the image")
    images = keras.Input(shape=tuple(input_shape), name="images")
    x = images
    for block in range(blocks):
        # No conv bias: batch norm cancels it. Pooling before ReLU gives the same values (ReLU is monotone) on
        # a 4x smaller tensor. Both save a full pass over the largest activations.
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=f"block{block}_bn")(x)
        x = keras.layers.MaxPooling2D(2, padding=pool_padding, name=f"block{block}_pool")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
    features = keras.layers.Flatten(name="features")(x)
    return keras.Model(images, features, name=name)
