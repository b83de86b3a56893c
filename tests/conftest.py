import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mssl_tf.data import omniglot  # noqa: E402


@pytest.fixture(scope="session")
def omniglot_dir():
    """The real Omniglot directory ($MSSL_TF_OMNIGLOT_DIR or ../shared/data/omniglot); its absence is a failure."""
    return omniglot.resolve_data_dir(None)


@pytest.fixture(scope="session")
def train_images(omniglot_dir):
    return omniglot.load_split("train", omniglot_dir)


def labelled_classes(classes=12, drawings=20, size=28):
    """Synthetic uint8 classes whose pixel (0,0) is the class id and (0,1) the drawing id."""
    images = np.zeros([classes, drawings, size, size], np.uint8)
    images[:, :, 0, 0] = np.arange(classes)[:, None]
    images[:, :, 0, 1] = np.arange(drawings)[None, :]
    rng = np.random.default_rng(0)
    images[:, :, 2:, 2:] = rng.integers(0, 255, [classes, drawings, size - 2, size - 2], dtype=np.uint8)
    return images
