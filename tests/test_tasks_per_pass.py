"""`tasks_per_pass`: the meta-batch's gradient computed a group of tasks at a time gives the same update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mssl_tf import build_method, conv4
from mssl_tf.training import TrainConfig
from mssl_tf.training.config import check
from mssl_tf.training.model import build_model

TASKS, WAYS, SHOTS, QUERIES = 4, 3, 1, 2


def meta_batch(seed=0):
    rng = np.random.default_rng(seed)
    labels = lambda per_class: np.tile(np.repeat(np.arange(WAYS, dtype=np.int32), per_class), [TASKS, 1])
    images = lambda count: tf.constant(rng.random([TASKS, count, 28, 28, 1]), dtype=keras.config.floatx())
    return {"support_images": images(WAYS * SHOTS),
            "support_labels": tf.constant(labels(SHOTS)),
            "query_images": images(WAYS * QUERIES),
            "query_labels": tf.constant(labels(QUERIES))}


def one_step(name, tasks_per_pass, **options):
    """The method's weights after one compiled training step on `meta_batch()` (SGD, so the update is the
    gradient itself), and the step's reported loss."""
    keras.utils.set_random_seed(3)
    model = build_method(name, conv4(), **options)
    model.tasks_per_pass = tasks_per_pass
    model.compile(keras.optimizers.SGD(0.5))
    model.optimizer.build(model.trainable_variables)
    logs = tf.function(model.train_step)(meta_batch())
    return [weight.numpy() for weight in model.trainable_variables], float(logs["loss"]), float(logs["accuracy"])


def assert_same_update(name, rtol, atol, **options):
    whole, whole_loss, whole_accuracy = one_step(name, None, **options)
    grouped, grouped_loss, grouped_accuracy = one_step(name, 2, **options)
    keras.utils.set_random_seed(3)
    started = [weight.numpy() for weight in build_method(name, conv4(), **options).trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(whole, started))  # the step moved the weights
    for a, b in zip(whole, grouped):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert grouped_loss == pytest.approx(whole_loss, rel=rtol)
    assert grouped_accuracy == pytest.approx(whole_accuracy)


MAML = {"ways": WAYS, "inner_steps": 2, "inner_learning_rate": 0.4}  # second order


@pytest.mark.parametrize("name,options", [("protonet", {}),
                                          ("maml", {**MAML, "inner_steps": 1, "task_batching": False})])
def test_groups_of_tasks_give_the_whole_meta_batch_update(name, options, float64):
    """float64: only the summation order differs, so the updates agree to rounding."""
    assert_same_update(name, 1e-9, 1e-12, **options)


def test_groups_of_tasks_give_the_whole_update_through_grouped_convolutions():
    """MAML's default task batching (grouped convolutions have no float64 gradient kernel on CPU): float32,
    where the summation order moved a few weights by about 1e-3 relative (up to 4e-5 absolute) in development;
    dropping a group moves them by the size of the update itself."""
    assert_same_update("maml", 3e-3, 2e-4, **MAML)


def test_a_group_size_that_does_not_divide_the_meta_batch_is_refused():
    with pytest.raises(ValueError, match="must divide the meta-batch of 4 tasks"):
        one_step("protonet", 3)
    with pytest.raises(ValueError, match="positive divisor of --meta-batch 32"):
        check(TrainConfig(method="maml", meta_batch=32, tasks_per_pass=5))


def test_methods_with_their_own_training_step_refuse_it():
    config = TrainConfig(method="reptile", meta_batch=4, tasks_per_pass=2, ways=WAYS)
    class_images = np.random.default_rng(0).integers(0, 255, [6, 4, 28, 28], dtype=np.uint8)
    with pytest.raises(ValueError, match="reptile has its own"):
        build_model(config, class_images, class_images)
