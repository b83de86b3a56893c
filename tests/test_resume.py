"""Kill-and-resume: a run killed with SIGKILL mid-epoch and started again with the same command resumes from its
last checkpoint and ends with the weights and metrics of an uninterrupted run (for `fit` and for the
multi-worker driver); the data position is part of what is restored."""

import json
import os
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.training.datasets import episode_dataset_fn, episodes_from_step, global_batch_dataset_fn
from mssl_tf.training import load_trained
from tests.workers import cluster
from tests.conftest import labelled_classes

pytestmark = pytest.mark.slow  # kills and resumes real training processes (about 2.5 min)

KILL_AT = 4  # the runs have 8 steps in one epoch and a checkpoint every 2: step 4 is mid-epoch
PREEMPT_AFTER = 2  # the preempted run gets its SIGTERM once step 2 is checkpointed
DELAY = "0.5"  # seconds slept after each step of a run that gets interrupted (leaves time to interrupt it)


def latest_checkpoint_step(backup):
    """The step of the latest complete checkpoint of the driver (from CheckpointManager's state file), or -1."""
    state = backup / "checkpoint"
    found = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text() if state.exists() else "", re.MULTILINE)
    return int(found.group(1)) if found else -1


def backup_step(backup):
    """The step of `fit`'s latest complete backup (`AtomicBackupAndRestore`'s pointer names it), or -1."""
    try:
        name = json.loads((backup / "latest.json").read_text())["checkpoint"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1
    return int(name.rpartition("-")[2])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted, SIGKILLed-and-restarted and (driver) SIGTERMed-and-restarted runs of the same command.

    The runs of `fit` (one process each) and of the multi-worker driver (two workers each) overlap in time to
    share the processes' start-up; the interrupted ones sleep after every step, which changes no number.
    """
    directory = tmp_path_factory.mktemp("resume")
    commands = {
        "fit": ["train", directory / "fit"],
        "driver": ["train", directory / "driver", "--strategy", "multiworker"],
        "preempted": ["train", directory / "preempted", "--strategy", "multiworker", "--preemption"],
    }
    # PreemptionCheckpointHandler asks the GCE metadata server whether it runs on Google Cloud: keep it local.
    local_metadata = {"GCE_METADATA_IP": f"127.0.0.1:{cluster.free_ports(1)[0]}"}
    references = [cluster.start(["train", directory / "fit_reference"], directory / "fit_reference.log")]
    references += cluster.start_workers(
        ["train", directory / "driver_reference", "--strategy", "multiworker"], directory, "driver_reference"
    )[0]
    interrupted = {"fit": ([cluster.start(commands["fit"] + ["--delay", DELAY], directory / "fit_killed_0.log")], None)}
    interrupted["driver"] = cluster.start_workers(commands["driver"] + ["--delay", DELAY], directory, "driver_killed")
    interrupted["preempted"] = cluster.start_workers(
        commands["preempted"] + ["--delay", DELAY], directory, "preempted_first", environment=local_metadata
    )
    ready = {
        "fit": lambda: backup_step(directory / "fit" / "run" / "backup") >= KILL_AT,
        "driver": lambda: latest_checkpoint_step(directory / "driver" / "run" / "backup") >= KILL_AT,
        "preempted": lambda: latest_checkpoint_step(directory / "preempted" / "run" / "backup") >= PREEMPT_AFTER,
    }
    deadline = time.monotonic() + 240
    while ready:
        for name in [name for name in ready if ready[name]()]:
            processes = interrupted[name][0]
            assert all(process.poll() is None for process in processes), f"the {name} run ended before its interruption"
            if name == "preempted":
                os.kill(processes[1].pid, signal.SIGTERM)  # one worker is told it is preempted
            else:
                cluster.kill(processes)
            del ready[name]
        if time.monotonic() > deadline:
            cluster.kill(references + [process for processes, _ in interrupted.values() for process in processes])
            raise AssertionError(f"no checkpoint to interrupt {sorted(ready)} at in 240 s")
        time.sleep(0.02)
    cluster.finish(interrupted["preempted"][0], timeout=120, expected_code=42)  # both workers save and exit
    preempted_at = latest_checkpoint_step(directory / "preempted" / "run" / "backup")

    # The same commands again (the same TF_CONFIG for the workers), without the delay.
    resumed = [cluster.start(commands["fit"], directory / "fit_resumed_0.log")]
    resumed += cluster.start_workers(commands["driver"], directory, "driver_resumed", ports=interrupted["driver"][1])[0]
    resumed += cluster.start_workers(commands["preempted"], directory, "preempted_resumed",
                                     ports=interrupted["preempted"][1], environment=local_metadata)[0]
    cluster.finish(references + resumed, timeout=300)
    return directory, preempted_at


def final_state(run_directory):
    model, summary = load_trained(run_directory)
    return [weight.numpy() for weight in model.weights], summary


def assert_same_run(resumed_directory, reference_directory, resumed_from):
    resumed, resumed_summary = final_state(resumed_directory)
    reference, reference_summary = final_state(reference_directory)
    assert resumed_summary["resumed_from"] == resumed_from and reference_summary["resumed_from"] == 0
    assert resumed_summary["steps"] == reference_summary["steps"] == 8
    for a, b in zip(resumed, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The final validation (fixed episodes, trained weights) is the same.
    last_resumed, last_reference = resumed_summary["curve"][-1], reference_summary["curve"][-1]
    assert last_resumed["steps"] == last_reference["steps"] == 8
    assert last_resumed["validation_accuracy"] == pytest.approx(last_reference["validation_accuracy"], abs=1e-6)
    return resumed_summary, reference_summary


def test_fit_resumes_after_sigkill(runs):
    directory, _ = runs
    assert f"resumed from step {KILL_AT}" in (directory / "fit_resumed_0.log").read_text()
    assert_same_run(directory / "fit" / "run", directory / "fit_reference" / "run", KILL_AT)


def test_multiworker_driver_resumes_after_sigkill(runs):
    directory, _ = runs
    assert f"resumed from step {KILL_AT}" in (directory / "driver_resumed_0.log").read_text()  # the chief reports
    resumed, reference = assert_same_run(directory / "driver" / "run", directory / "driver_reference" / "run", KILL_AT)
    # The driver checkpoints the metric trackers mid-epoch: the epoch's metrics match, though the killed run
    # began the epoch and the resumed run finished it.
    assert resumed["history"].keys() == reference["history"].keys()
    for name, values in reference["history"].items():
        np.testing.assert_allclose(resumed["history"][name], values, rtol=1e-5)
    assert not list((directory / "driver" / "run" / "backup").glob(".workers/*")), "workers' temporary copies remain"


def test_multiworker_driver_saves_on_sigterm_and_resumes(runs):
    directory, preempted_at = runs
    assert PREEMPT_AFTER < preempted_at < 8
    assert_same_run(directory / "preempted" / "run", directory / "driver_reference" / "run", preempted_at)


# === The data position ===
def test_episodes_from_step_continue_the_episode_stream():
    images = labelled_classes()
    spec = EpisodeSpec(3, 1, 2)
    stream = list(episode_dataset(images, spec, meta_batch=2, seed=4).take(5))
    resumed = list(episodes_from_step(images, spec, 2, seed=4, start_step=3).take(2))
    for expected, actual in zip(stream[3:], resumed):
        for key in expected:
            np.testing.assert_array_equal(expected[key].numpy(), actual[key].numpy())


@pytest.mark.parametrize("pipelines,replicas", [(1, 1), (2, 2), (1, 2), (2, 4)])
def test_replica_batches_make_up_the_global_batch(pipelines, replicas):
    """Per-replica batches of step s (in pipeline and then local-replica order) are the global batch of step s,
    for the episode function and for the generic adapter, from any start step."""
    images = labelled_classes()
    spec = EpisodeSpec(3, 1, 2)
    meta_batch, start, steps = 4, 2, 2
    stream = list(episode_dataset(images, spec, meta_batch, seed=9).skip(start).take(steps))
    local = replicas // pipelines
    functions = {
        "episodes": episode_dataset_fn(images, spec, meta_batch, seed=9),
        "adapter": global_batch_dataset_fn(lambda first: episodes_from_step(images, spec, meta_batch, 9, first)),
    }
    for name, dataset_fn in functions.items():
        parts = [
            list(dataset_fn(tf.distribute.InputContext(pipelines, pipeline, replicas), start).take(steps * local))
            for pipeline in range(pipelines)
        ]
        for step, expected in enumerate(stream):
            pieces = [parts[pipeline][step * local + replica] for pipeline in range(pipelines) for replica in range(local)]
            for key in expected:
                actual = np.concatenate([piece[key].numpy() for piece in pieces])
                np.testing.assert_array_equal(actual, expected[key].numpy(), err_msg=f"{name} step {step} {key}")


def test_uneven_global_batch_is_refused():
    dataset_fn = episode_dataset_fn(labelled_classes(), EpisodeSpec(3, 1, 2), meta_batch=3, seed=0)
    with pytest.raises(ValueError, match="does not divide across 2 replicas"):
        dataset_fn(tf.distribute.InputContext(1, 0, 2), 0)
