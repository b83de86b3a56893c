"""Exported encoders reload into Keras (the .keras twin, or TFSMLayer over the SavedModel) and fine-tune."""

import numpy as np
import pytest

from mssl_tf import export, finetune, zoo
from mssl_tf.data import load_split

ENTRY = "prototypical-networks-conv4-omniglot"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export.export_model(zoo.load(ENTRY), tmp_path_factory.mktemp("export"), ENTRY, warmup=False)


@pytest.fixture(scope="module")
def few_labels(omniglot_dir):
    """10 unseen test characters: 2 labeled drawings each to train on, 10 held out."""
    classes = load_split("test", omniglot_dir)[::160][:10].astype(np.float32)[..., None] / 255.0
    labels = np.repeat(np.arange(len(classes)), classes.shape[1]).reshape(len(classes), -1)
    return (classes[:, :2].reshape(-1, 28, 28, 1), labels[:, :2].ravel(),
            classes[:, 10:].reshape(-1, 28, 28, 1), labels[:, 10:].ravel())


def accuracy(model, images, labels):
    return float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))


@pytest.mark.parametrize("how", ["keras", "saved_model"])
def test_fine_tuning_improves_held_out_accuracy(exported, few_labels, how):
    train_images, train_labels, held_out_images, held_out_labels = few_labels
    encoder = finetune.load_exported(exported, how)
    before_weights = [w.copy() for w in encoder.get_weights()]
    untrained = finetune.classifier(encoder, 10)
    before = accuracy(untrained, held_out_images, held_out_labels)
    tuned = finetune.fine_tune(encoder, train_images, train_labels, epochs=60, learning_rate=3e-3)
    after = accuracy(tuned, held_out_images, held_out_labels)
    assert after >= 0.8 and after > before + 0.3, (before, after)
    assert any(not np.array_equal(a, b) for a, b in zip(before_weights, encoder.get_weights())), \
        "the encoder's weights did not train"


def test_missing_twin_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="saved_model"):
        finetune.load_exported(tmp_path)
