"""Shared machinery of the "2 replicas = 1 replica" checks (tests/workers/*mirrored_step.py and tests/test_*mirrored.py).

A step script trains the same model from the same initial weights once on the default strategy and once under a
2-logical-CPU MirroredStrategy, on the same global batches, and prints one JSON line per method; the test runs the
script in a subprocess (logical devices must be configured before TensorFlow initializes) and compares.
"""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[2]


def fit_from(strategy, build, initial_weights, data, steps, optimizer, compared=None):
    """Builds and compiles in `strategy`'s scope, fits `steps` steps on `data`.

    Returns (all weights before, loss of the epoch, compared variables before, compared variables after); the
    compared variables default to the trainable ones.
    """
    import tensorflow as tf

    compared = compared or (lambda model: model.trainable_variables)
    with strategy.scope():
        model = build()
        if initial_weights is not None:
            model.set_weights(initial_weights)
        # Plain SGD: a gradient off by a factor (e.g. the replica count) changes the update, unlike Adam's steps.
        model.compile(optimizer())
    weights = [w.copy() for w in model.get_weights()]
    before = [v.numpy() for v in compared(model)]
    dataset = data if isinstance(data, tf.data.Dataset) else tf.data.Dataset.from_tensors(data)
    history = model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return weights, history.history["loss"][0], before, [v.numpy() for v in compared(model)]


@functools.cache
def mirrored_strategy():
    """One MirroredStrategy per process: a second one over the same devices breaks its collectives."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def report(name, run):
    """Runs `run(strategy, initial_weights)` on one device, then mirrored from the same start; prints the JSON line."""
    import keras
    import tensorflow as tf

    mirrored = mirrored_strategy()
    keras.utils.set_random_seed(0)
    initial, single_loss, before, single = run(tf.distribute.get_strategy(), None)
    _, mirrored_loss, _, mirrored_weights = run(mirrored, initial)
    update = np.concatenate([(a - b).ravel() for a, b in zip(single, before)])
    difference = np.concatenate([(a - b).ravel() for a, b in zip(single, mirrored_weights)])
    print(json.dumps({
        "method": name, "replicas": mirrored.num_replicas_in_sync, "single_loss": single_loss,
        "mirrored_loss": mirrored_loss, "update_norm": float(np.linalg.norm(update)),
        "difference_norm": float(np.linalg.norm(difference)),
    }), flush=True)


def run_step_script(module: str, names) -> dict:
    """Runs `python -m <module> <names...>` and returns its JSON lines by method."""
    completed = subprocess.run([sys.executable, "-m", module, *names], cwd=ROOT, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return {result["method"]: result for result in results}


def assert_replicas_agree(result, minimum_update=1e-3):
    import pytest

    assert result["replicas"] == 2
    assert result["update_norm"] > minimum_update, "the step must move the weights for the comparison to mean anything"
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-5, abs=1e-6)
    # A gradient summed without the 1/replicas scaling (or averaged twice) would differ by the whole update.
    assert result["difference_norm"] < 1e-3 * result["update_norm"]


def assert_replicas_disagree(result):
    """A negative control: the broken step must miss `assert_replicas_agree`'s bound by a wide margin."""
    assert result["replicas"] == 2
    assert result["update_norm"] > 1e-3, "the step must move the weights for the comparison to mean anything"
    assert result["difference_norm"] > 0.1 * result["update_norm"], (
        f"a broken distributed step went unnoticed: {result}")
