"""Conv-4's pooling: floor (the few-shot standard, 1x1x64 on 28x28) or ceil (PsCo's reference, 2x2x64)."""

from __future__ import annotations

import numpy as np
import pytest

from mssl_tf.backbones import build_backbone


@pytest.mark.parametrize(("pool_padding", "features"), [("valid", 64), ("same", 256)])
def test_conv4_pooling_sets_the_feature_size_on_28x28(pool_padding, features):
    model = build_backbone("conv4", input_shape=(28, 28, 1), pool_padding=pool_padding)
    assert model.output_shape == (None, features)
    assert model(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, features)


def test_conv4_refuses_an_unknown_pool_padding():
    with pytest.raises(ValueError, match="pool_padding='ceil'"):
        build_backbone("conv4", input_shape=(28, 28, 1), pool_padding="ceil")
