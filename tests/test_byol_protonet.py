"""BYOL + ProtoNet trained jointly (`byol_protonet`): the step's loss and gradient are ProtoNet's plus the weighted
BYOL loss, each computed by its own method on the same tasks; the target follows by one EMA update per step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mssl_tf
from mssl_tf.data import EpisodeSpec
from mssl_tf.data.unsupervised_tasks import as_image_table, augmentation_task
from mssl_tf.losses import multi_view_byol_loss, symmetric_byol_loss
from mssl_tf.methods import ProtoNet
from mssl_tf.methods.ssl import BYOL
from mssl_tf.methods.meta_ssl import BYOLProtoNet
from tests.conftest import labelled_classes

HEADS = {"hidden_units": (16,), "projection_units": 8}
WEIGHT = 0.7


def backbone():
    return mssl_tf.conv4(filters=8)


def augmentation_batch(tasks=2, spec=EpisodeSpec(4, 1, 1)):
    """`tasks` augmentation-made tasks (views of unlabeled images) as a meta-batch."""
    images = as_image_table(labelled_classes(classes=6, drawings=4).reshape(-1, 28, 28))
    made = [augmentation_task(images, spec, tf.constant([index, 3], tf.int64)) for index in range(tasks)]
    return {key: tf.stack([task[key] for task in made]) for key in made[0]}


def perturbed(weights, seed):
    rng = np.random.default_rng(seed)
    return [w + 0.1 * rng.standard_normal(w.shape).astype(w.dtype) for w in weights]


def test_multi_view_loss_is_symmetric_byol_for_two_views_and_averages_every_ordered_pair():
    rng = np.random.default_rng(0)
    p, z = (tf.constant(rng.standard_normal([6, 5]), tf.float32) for _ in range(2))
    two_views = multi_view_byol_loss(p, z, tf.constant([0, 1, 2, 0, 1, 2]))
    expected = symmetric_byol_loss(p[:3], z[3:], p[3:], z[:3])
    assert float(two_views) == pytest.approx(float(expected), rel=1e-6)
    # Three views of source 0 and two of source 1 (6 + 2 ordered pairs); source 2's lone view makes no pair.
    sources = [0, 0, 0, 1, 1, 2]
    pn, zn = tf.math.l2_normalize(p, -1).numpy(), tf.math.l2_normalize(z, -1).numpy()
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j and sources[i] == sources[j]]
    by_hand = 2 * np.mean([2 - 2 * pn[i] @ zn[j] for i, j in pairs])
    assert float(multi_view_byol_loss(p, z, tf.constant(sources))) == pytest.approx(by_hand, rel=1e-5)


def test_the_step_is_protonet_plus_weighted_byol_computed_separately_on_the_same_tasks():
    keras.utils.set_random_seed(0)
    batch = augmentation_batch()
    # base_decay 1: the EMA leaves the target as it is, so the references see the step's target.
    combined = BYOLProtoNet(backbone(), byol_weight=WEIGHT, base_decay=1.0, **HEADS)
    combined.target_backbone.set_weights(perturbed(combined.backbone.get_weights(), 1))
    combined.target_projector.set_weights(perturbed(combined.projector.get_weights(), 2))
    protonet = ProtoNet(backbone())
    protonet.backbone.set_weights(combined.backbone.get_weights())
    byol = BYOL(backbone(), base_decay=1.0, **HEADS)
    for name in ("backbone", "projector", "predictor", "target_backbone", "target_projector"):
        getattr(byol, name).set_weights(getattr(combined, name).get_weights())
    byol.compile(keras.optimizers.SGD(1.0))

    tasks = batch["support_images"].shape[0]
    with tf.GradientTape(persistent=True) as tape:
        protonet_loss = tf.reduce_mean([protonet.meta_learn({key: batch[key][index] for key in batch}, True)[0]
                                        for index in range(tasks)])
        byol_loss = tf.reduce_mean([
            byol.compute_ssl_loss([batch["support_images"][index], batch["query_images"][index]], True)[0]
            for index in range(tasks)])
    protonet_gradients = tape.gradient(protonet_loss, protonet.backbone.trainable_variables)
    byol_gradients = tape.gradient(byol_loss, byol.backbone.trainable_variables + byol.projector.trainable_variables
                                   + byol.predictor.trainable_variables)
    assert float(protonet_loss) > 0.1 and float(byol_loss) > 0.1  # both terms count

    combined.compile(keras.optimizers.SGD(1.0))  # a step of rate 1 moves every weight by minus its gradient
    variables = (combined.backbone.trainable_variables + combined.projector.trainable_variables
                 + combined.predictor.trainable_variables)
    before = [variable.numpy() for variable in variables]
    logs = combined.train_step(batch)
    assert float(logs["episodic_loss"]) == pytest.approx(float(protonet_loss), rel=1e-5)
    assert float(logs["byol_loss"]) == pytest.approx(float(byol_loss), rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(float(protonet_loss) + WEIGHT * float(byol_loss), rel=1e-5)
    backbone_count = len(protonet_gradients)
    expected = [p + WEIGHT * b for p, b in zip(protonet_gradients, byol_gradients[:backbone_count])]
    expected += [WEIGHT * b for b in byol_gradients[backbone_count:]]
    for old, variable, gradient in zip(before, variables, expected):
        np.testing.assert_allclose(old - variable.numpy(), gradient.numpy(), rtol=1e-3, atol=1e-5,
                                   err_msg=variable.path)


def test_the_target_moves_by_one_ema_update_per_step_whatever_the_meta_batch():
    keras.utils.set_random_seed(0)
    model = BYOLProtoNet(backbone(), base_decay=0.9, total_steps=10, **HEADS)
    model.target_backbone.set_weights(perturbed(model.backbone.get_weights(), 3))
    model.compile(keras.optimizers.SGD(0.1))
    online = [variable.numpy() for variable, _ in model.target_pairs]
    target = [copy.numpy() for _, copy in model.target_pairs]
    model.train_step(augmentation_batch(tasks=3))
    decay = 0.9  # τ at step 0 is τ_base
    for (_, copy), old_online, old_target in zip(model.target_pairs, online, target):
        np.testing.assert_allclose(copy.numpy(), decay * old_target + (1 - decay) * old_online, rtol=1e-5,
                                   atol=1e-6)


def test_evaluation_is_protonet_on_the_shared_backbone():
    keras.utils.set_random_seed(0)
    model = BYOLProtoNet(backbone(), **HEADS)
    protonet = ProtoNet(backbone())
    protonet.backbone.set_weights(model.backbone.get_weights())
    batch = augmentation_batch(spec=EpisodeSpec(4, 1, 2))
    np.testing.assert_allclose(model.meta_batch_learn(batch, training=False)[1],
                               protonet.meta_batch_learn(batch, training=False)[1], rtol=1e-6)
