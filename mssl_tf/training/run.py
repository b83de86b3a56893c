"""`train(config)`: checks the config and hands it to the driver that trains it."""

from __future__ import annotations

from dataclasses import replace

from mssl_tf.training.config import TrainConfig, check, view_preset
from mssl_tf.training.distributed import train_distributed
from mssl_tf.training.fit import save_untrained, train_with_fit


def train(config: TrainConfig, callbacks=()) -> dict:
    """Trains one model, saves `<output>/model.keras` and `<output>/train.json`, returns the summary.

    `strategy="multiworker"` trains with the distributed driver (`mssl_tf.training.distributed`), anything else
    with `model.fit` (`mssl_tf.training.fit`); `steps=0` saves the seeded, untrained model. A run killed
    part-way resumes from its last backup (`backup_dir`) when started again with the same config.
    """
    check(config)
    config = replace(config, views=view_preset(config))  # recorded in train.json as the preset used
    if config.strategy == "multiworker":
        return train_distributed(config, callbacks)
    if config.steps == 0:
        return save_untrained(config)  # the random-initialization floor
    return train_with_fit(config, callbacks)
