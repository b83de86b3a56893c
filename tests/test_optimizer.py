"""`--optimizer sgd` and `--weight-decay`: the update each makes, and a real (tiny) training run with them."""

import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.cli import build_parser
from mssl_tf.training import TrainConfig
from mssl_tf.training.config import check
from mssl_tf.training.model import make_optimizer


def one_update(config: TrainConfig, gradient: float, steps: int = 2) -> float:
    weight = tf.Variable([1.0])
    optimizer = make_optimizer(config)
    for _ in range(steps):
        optimizer.apply_gradients([(tf.constant([gradient]), weight)])
    return float(weight.numpy()[0])


def test_sgd_has_momentum_and_decay_is_decoupled():
    config = TrainConfig(optimizer="sgd", learning_rate=0.1, lr_schedule="cosine")
    # Two steps of gradient 1 with momentum 0.9: velocity 1 then 1.9, w = 1 - 0.1 - 0.19.
    assert one_update(config, 1.0) == pytest.approx(1 - 0.1 - 0.19)
    # A zero gradient: only the decay moves w, by learning_rate · weight_decay per step, no momentum.
    decayed = TrainConfig(optimizer="sgd", learning_rate=0.5, weight_decay=0.1, lr_schedule="cosine")
    assert one_update(decayed, 0.0) == pytest.approx((1 - 0.05) ** 2)
    assert one_update(TrainConfig(learning_rate=0.5, lr_schedule="cosine"), 0.0) == 1.0  # Adam, no decay


def test_unknown_optimizer_and_negative_decay_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        check(TrainConfig(optimizer="rmsprop"))
    with pytest.raises(ValueError, match="--weight-decay must be at least 0"):
        check(TrainConfig(weight_decay=-1.0))


def test_the_flags_reach_the_config():
    from mssl_tf.cli.train import train_config

    args = build_parser().parse_args(["train", "--optimizer", "sgd", "--weight-decay", "5e-3"])
    args.command_line = "mssl-tf train --optimizer sgd --weight-decay 5e-3"
    config = train_config(args)
    assert (config.optimizer, config.weight_decay) == ("sgd", 5e-3)


def test_a_run_trains_with_sgd_and_decay_and_records_them(tmp_path):
    from mssl_tf.data import class_splits
    from mssl_tf.training import load_trained, train

    rng = np.random.default_rng(0)
    dataset = class_splits.register_arrays("toy-optimizer", {
        split: rng.integers(0, 256, (classes, 6, 16, 16, 1), dtype=np.uint8)
        for split, classes in (("train", 5), ("val", 3), ("test", 3))})
    train(TrainConfig(dataset=dataset, backbone="conv4", ways=3, shots=1, queries=2, steps=3, steps_per_epoch=3,
                      validate_ways=3, validate_episodes=2, optimizer="sgd", weight_decay=5e-3, learning_rate=0.05,
                      output=str(tmp_path / "run")))
    model, summary = load_trained(tmp_path / "run" / "model.keras")
    assert (summary["config"]["optimizer"], summary["config"]["weight_decay"]) == ("sgd", 5e-3)
    assert int(model.optimizer.iterations.numpy()) == 3 and np.all(np.isfinite(model.backbone.get_weights()[0]))
