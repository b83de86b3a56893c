"""Strategies by name, and logical CPU devices for testing distribution on one machine."""

from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("default", "mirrored")


def split_cpu(count: int) -> list:
    """Splits the physical CPU into `count` logical devices. Call before TensorFlow initializes its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing is None or len(existing) != count:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return tf.config.list_logical_devices("CPU")


def get_strategy(name: str = "default", devices: int | None = None) -> tf.distribute.Strategy:
    """`default` (no distribution) or `mirrored` over local GPUs, or `devices` logical CPUs when no GPU exists."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        logical = split_cpu(devices or 2)
        return tf.distribute.MirroredStrategy([device.name for device in logical])
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}")
