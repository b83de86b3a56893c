"""`AtomicBackupAndRestore`: Keras' `BackupAndRestore` whose backups survive a kill at any instant.

Keras writes `latest.weights.h5` and `training_metadata.json` in place: a SIGKILL during the write leaves a
truncated file (a 0-byte metadata file makes every later start fail with `JSONDecodeError`). Here every backup is
a complete directory before it exists under its name:

    backup/step-000000300/{weights.weights.h5, training_metadata.json}   ← written as .partial-*, fsynced, renamed
    backup/latest.json                                                   ← {"checkpoint": "step-000000300"}, atomic

A start restores the checkpoint `latest.json` names, or else the newest complete `step-*` directory that loads;
half-written `.partial-*` directories are ignored and removed. The previous checkpoint is kept (`keep`), so a
backup that fails to load (a disk error) falls back to the one before it. A backup directory in Keras' own layout
(from an older run) is still restored, by Keras.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras

from mssl_tf.results import write_json

POINTER = "latest.json"
PREFIX = "step-"
PARTIAL = ".partial-"


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with atomic, versioned backups (see the module docstring).

    Args:
        backup_dir: where the backups live.
        save_freq: `"epoch"` or a number of batches between backups.
        keep: complete backups kept (at least 2: the newest and a fallback).
        delete_checkpoint: remove `backup_dir` when training ends normally.
        run_state: `() → dict` of JSON values saved with every backup (e.g. the training seconds so far); a
            restore puts the saved dict in `restored_state` ({} for a fresh start or an older backup).
    """

    def __init__(self, backup_dir, save_freq="epoch", keep: int = 2, delete_checkpoint: bool = True,
                 run_state=None):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)
        self.directory = Path(backup_dir)
        self.keep = max(2, int(keep))
        self.run_state = run_state
        self.restored_from: str | None = None
        self.restored_state: dict = {}

    # === Saving ===
    def _save_model(self):
        step = int(self.model.optimizer.iterations.numpy())
        name = f"{PREFIX}{step:09d}"
        if self._pointed() == name:
            return  # this exact state is already the latest backup (an epoch end right after a batch backup)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f"{PARTIAL}{name}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        weights, metadata = partial / "weights.weights.h5", partial / "training_metadata.json"
        self.model.save_weights(weights, overwrite=True)
        state = self.run_state() if self.run_state else {}
        metadata.write_text(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen, "step": step,
                                        "run_state": state}))
        for path in (weights, metadata):
            fsync_file(path)
        fsync_directory(partial)
        final = self.directory / name
        shutil.rmtree(final, ignore_errors=True)  # an unpointed leftover of the same step (a restarted epoch)
        os.rename(partial, final)
        fsync_directory(self.directory)
        write_json(self.directory / POINTER, {"checkpoint": name})
        fsync_directory(self.directory)
        for old in self._complete()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)

    # === Restoring ===
    def on_train_begin(self, logs=None):
        for leftover in self.directory.glob(f"{PARTIAL}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        candidates = self._complete()
        pointed = self._pointed()
        if pointed:
            candidates.sort(key=lambda path: path.name != pointed)  # the pointed one first, then newest first
        if not candidates:
            if (self.directory / "latest.weights.h5").exists():
                super().on_train_begin(logs)  # Keras' own layout, from an older run
            return
        errors = []
        for candidate in candidates:
            self._weights_path = str(candidate / "weights.weights.h5")
            self._training_metadata_path = str(candidate / "training_metadata.json")
            try:
                missing = [name for name in ("weights.weights.h5", "training_metadata.json")
                           if not (candidate / name).is_file()]
                if missing:
                    raise FileNotFoundError(f"{', '.join(missing)} missing")
                self._load_model()
                state = json.loads((candidate / "training_metadata.json").read_text()).get("run_state", {})
            except (OSError, ValueError, KeyError) as error:  # JSONDecodeError is a ValueError
                errors.append(f"{candidate.name}: {type(error).__name__}: {error}")
                continue
            self.restored_from, self.restored_state = candidate.name, state
            if errors:
                print(f"backup: restored {candidate.name}; could not load {'; '.join(errors)}", flush=True)
            return
        raise RuntimeError(f"No backup in {self.directory} could be restored ({'; '.join(errors)}); move the "
                           "directory away to start the run afresh")

    def _complete(self) -> list[Path]:
        """Complete backups, newest first."""
        if not self.directory.is_dir():
            return []
        found = [path for path in self.directory.glob(f"{PREFIX}*") if path.is_dir()]
        return sorted(found, key=lambda path: path.name, reverse=True)

    def _pointed(self) -> str | None:
        try:
            name = json.loads((self.directory / POINTER).read_text())["checkpoint"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return name if (self.directory / name).is_dir() else None
