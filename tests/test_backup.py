"""`fit`'s backups survive a kill at any instant, inside a backup write included (issue: a SIGKILL during Keras'
in-place write left a 0-byte `training_metadata.json` and an unresumable run)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from mssl_tf.training.backup import POINTER, AtomicBackupAndRestore
from tests.workers import backup_worker

ROOT = Path(__file__).parents[1]
STEPS = 24
WORKER = [sys.executable, "-m", "tests.workers.backup_worker"]


def start(output: Path) -> subprocess.Popen:
    return subprocess.Popen([*WORKER, str(output), str(STEPS)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, timeout: float = 240) -> None:
    _, errors = process.communicate(timeout=timeout)
    assert process.returncode == 0, errors[-3000:]


def weights(output: Path) -> list[np.ndarray]:
    stored = np.load(output / "final.npz")
    return [stored[f"arr_{index}"] for index in range(len(stored.files) - 1)], int(stored["step"])


def kill_when(process: subprocess.Popen, ready, deadline: float) -> bool:
    """SIGKILLs `process` as soon as `ready()` holds (polled every millisecond); False if it ended first."""
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.001)
    return False


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output = tmp_path_factory.mktemp("uninterrupted")
    finished(start(output))
    return weights(output)


@pytest.mark.slow  # five training processes, four of them SIGKILLed
def test_killed_at_many_instants_inside_and_between_writes_resumes_to_the_uninterrupted_weights(
        uninterrupted, tmp_path):
    backup = tmp_path / "backup"
    rng = random.Random(0)
    kills = {"inside a write": 0, "between writes": 0}
    expected_starts = [0]  # each start must resume from the backup that was complete when the last one was killed
    for attempt in range(4):
        process = start(tmp_path)
        inside = attempt % 2 == 0

        def started(count=len(expected_starts)):  # this process restored (and removed the leftover .partial-*)
            log = tmp_path / "starts.jsonl"
            return log.exists() and len(log.read_text().splitlines()) == count

        if inside:  # the moment a backup directory is being written
            ready = lambda: started() and any(backup.glob(".partial-*"))  # noqa: E731
        else:  # a random instant once some backup exists
            moment = [None]

            def ready():
                if moment[0] is None and started() and (backup / POINTER).exists():
                    moment[0] = time.monotonic() + rng.uniform(0.0, 0.3)
                return moment[0] is not None and time.monotonic() >= moment[0]
        if kill_when(process, ready, time.monotonic() + 120):
            kills["inside a write" if inside else "between writes"] += 1
            pointed = json.loads((backup / POINTER).read_text())["checkpoint"] if (backup / POINTER).exists() else None
            expected_starts.append(int(pointed.rpartition("-")[2]) if pointed else 0)
        else:
            finished(process)
            break
    assert kills["inside a write"] >= 2 and kills["between writes"] >= 2, kills
    finished(start(tmp_path))
    starts = [json.loads(line)["start"] for line in (tmp_path / "starts.jsonl").read_text().splitlines()]
    assert starts == expected_starts, "a restart did not resume from the last complete backup"
    assert max(starts) > 0
    final, step = weights(tmp_path)
    expected, expected_step = uninterrupted
    assert step == expected_step == STEPS
    for mine, reference in zip(final, expected):
        np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-7)


def test_a_backup_truncated_mid_write_is_skipped_and_the_previous_one_restored(tmp_path):
    """The state a kill can leave, made by hand: Keras' own callback cannot start from it, ours can."""
    network = backup_worker.model()
    callback = AtomicBackupAndRestore(tmp_path / "ours", save_freq=1)
    network.fit(backup_worker.batches(0), steps_per_epoch=3, epochs=1, verbose=0, callbacks=[callback])
    # delete_checkpoint removed the directory at the end: write two backups by hand at steps 3 and 4.
    callback._save_model()
    kept = [layer.copy() for layer in network.get_weights()]
    network.fit(backup_worker.batches(3), steps_per_epoch=1, epochs=1, verbose=0)
    callback._save_model()
    newest = tmp_path / "ours" / "step-000000004"
    (newest / "weights.weights.h5").write_bytes((newest / "weights.weights.h5").read_bytes()[:1000])  # truncated
    (tmp_path / "ours" / ".partial-step-000000005").mkdir()  # a write the kill interrupted

    restored = backup_worker.model()
    resumer = AtomicBackupAndRestore(tmp_path / "ours")
    resumer.set_model(restored)
    resumer.on_train_begin()
    assert resumer.restored_from == "step-000000003"
    assert int(restored.optimizer.iterations.numpy()) == 3
    for mine, reference in zip(restored.get_weights(), kept):
        np.testing.assert_array_equal(mine, reference)
    assert not list((tmp_path / "ours").glob(".partial-*")), "half-written backups are removed"

    # Control: Keras' layout after a kill inside its metadata write (weights written, metadata 0 bytes).
    keras_dir = tmp_path / "keras"
    keras_callback = keras.callbacks.BackupAndRestore(keras_dir, save_freq=1, double_checkpoint=True)
    keras_callback.set_model(network)
    keras_callback._save_model()
    keras_callback._save_model()
    (keras_dir / "training_metadata.json").write_text("")
    stuck = keras.callbacks.BackupAndRestore(keras_dir, save_freq=1, double_checkpoint=True)
    stuck.set_model(backup_worker.model())
    with pytest.raises(json.JSONDecodeError):
        stuck.on_train_begin()


def test_no_restorable_backup_is_a_clear_error(tmp_path):
    (tmp_path / "step-000000002").mkdir()
    (tmp_path / "step-000000002" / "weights.weights.h5").write_bytes(b"not hdf5")
    callback = AtomicBackupAndRestore(tmp_path)
    callback.set_model(backup_worker.model())
    with pytest.raises(RuntimeError, match="No backup in .* could be restored.*step-000000002"):
        callback.on_train_begin()
