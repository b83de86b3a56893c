"""Snapshots of a run at marks of training time: accuracy against training time, each point a loadable model.

When the run's training clock (the one `--minutes` stops on: validation and snapshot writing excluded, continued
after a resume from the backup) first reaches a mark of `snapshot_minutes`, the model as it is after that step is
written to `<output>/snapshots/<mark>min/` as `model.keras` and `train.json` (the run's summary up to that step),
the layout `mssl-tf eval` reads, so its records carry the snapshot's own `train_seconds`. A snapshot directory is
complete before it exists under its name (written as `.partial-*`, then renamed); a mark whose directory exists
is never written again, so a resumed run keeps the snapshots taken before the interruption.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import keras

from mssl_tf.training.callbacks import TrainingClock, ValidationCurve
from mssl_tf.training.config import TrainConfig
from mssl_tf.training.records import run_summary, write_train_summary

DIRECTORY = "snapshots"


def snapshot_name(minutes: float) -> str:
    """`10` → `10min`, `0.5` → `0.5min`."""
    return f"{minutes:g}min"


def snapshot_directory(output, minutes: float) -> Path:
    return Path(output) / DIRECTORY / snapshot_name(minutes)


def snapshot_records(output, marks) -> list[dict]:
    """What `train.json` lists about the snapshots of the marks that were reached: mark, path, seconds, steps."""
    records = []
    for minutes in marks:
        summary_file = snapshot_directory(output, minutes) / "train.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            records.append({"minutes": minutes, "path": str(summary_file.parent),
                            "train_seconds": summary["train_seconds"], "steps": summary["steps"]})
    return records


class TrainingTimeSnapshots(keras.callbacks.Callback):
    """Saves the model at the first step whose training time reaches each of `config.snapshot_minutes`.

    Put it after the `TrainingClock` it reads (the clock counts the step first). The writing time is added to the
    clock's excluded time, so snapshots cost the run no training time.
    """

    def __init__(self, config: TrainConfig, clock: TrainingClock, curve: ValidationCurve | None = None):
        super().__init__()
        self.config, self.clock, self.curve = config, clock, curve
        self.pending: list[float] = []

    def on_train_begin(self, logs=None):
        marks = sorted(self.config.snapshot_minutes)
        self.pending = [minutes for minutes in marks if not snapshot_directory(self.config.output, minutes).exists()]
        passed = [minutes for minutes in self.pending if 60.0 * minutes <= self.clock.earlier]
        if passed:
            print(f"snapshots: no model was kept at {', '.join(map(snapshot_name, passed))} before the resume "
                  f"({self.clock.earlier:.1f} s restored); those marks are skipped", flush=True)
            self.pending = [minutes for minutes in self.pending if minutes not in passed]

    def on_train_batch_end(self, batch, logs=None):
        seconds = self.clock.training_seconds()
        while self.pending and 60.0 * self.pending[0] <= seconds:
            start = time.perf_counter()
            self.save(self.pending.pop(0), seconds)
            self.clock.excluded += time.perf_counter() - start

    def save(self, minutes: float, seconds: float) -> None:
        final = snapshot_directory(self.config.output, minutes)
        partial = final.parent / f".partial-{final.name}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.model.save(partial / "model.keras")
        curve = list(self.curve.points) if self.curve is not None else []
        write_train_summary(partial, run_summary(self.config, seconds, self.clock.steps, curve, {},
                                                 snapshot_minutes=minutes))
        os.rename(partial, final)
        print(f"  snapshot at {seconds:.1f} s of training (step {self.clock.steps}) → {final}", flush=True)
