"""`mssl-tf train --snapshot-minutes`: models kept at marks of training time, loadable by `mssl-tf eval`, and a
training clock that continues after a resume."""

import json
import time

import keras
import numpy as np
import pytest

from mssl_tf import cli, results
from mssl_tf.training import TrainConfig, load_trained, train
from mssl_tf.training.snapshots import snapshot_directory

TINY = ["--method", "protonet", "--ways", "5", "--shots", "1", "--queries", "2", "--validate-episodes", "5"]


def test_a_snapshot_is_an_earlier_model_that_eval_scores_with_its_own_time(tmp_path, omniglot_dir):
    run = tmp_path / "run"
    # The first step (which traces the step function) outlasts 0.0001 minutes; 1000 minutes is never reached.
    assert cli.main(["train", *TINY, "--data-dir", str(omniglot_dir), "--steps", "6", "--steps-per-epoch", "3",
                     "--snapshot-minutes", "0.0001,1000", "--output", str(run)]) == 0
    summary = json.loads((run / "train.json").read_text())
    early = snapshot_directory(run, 0.0001)
    assert [item["minutes"] for item in summary["snapshots"]] == [0.0001]
    assert not snapshot_directory(run, 1000).exists()
    snapshot_summary = json.loads((early / "train.json").read_text())
    assert snapshot_summary["steps"] == 1 and snapshot_summary["snapshot_minutes"] == 0.0001
    assert 0.006 <= snapshot_summary["train_seconds"] <= summary["train_seconds"]

    records_dir = tmp_path / "records"
    assert cli.main(["eval", str(early), "--data-dir", str(omniglot_dir), "--settings", "5w1s", "--episodes", "10",
                     "--results-dir", str(records_dir), "--run-name", "early"]) == 0
    (record,) = results.read_records(records_dir)
    assert record["train_seconds"] == snapshot_summary["train_seconds"]

    snapshot, _ = load_trained(early)
    final, _ = load_trained(run)
    differences = [float(np.abs(a - b).max()) for a, b in zip(snapshot.backbone.get_weights(),
                                                              final.backbone.get_weights())]
    assert max(differences) > 1e-4, "the snapshot holds the final weights, not those of step 1"


class PauseThenFail(keras.callbacks.Callback):
    """Spends `seconds` inside step 1 (training time) and kills the run after step 3 (before its next backup)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step == 1:
            time.sleep(self.seconds)
        if step == 3:
            raise KeyboardInterrupt("interrupted")


def test_the_training_clock_and_the_snapshots_survive_a_resume(tmp_path, omniglot_dir):
    config = TrainConfig(method="protonet", ways=5, shots=1, queries=2, steps=4, steps_per_epoch=4,
                         validate_episodes=5, backup_every=2, snapshot_minutes=(0.0001,), data_dir=str(omniglot_dir),
                         output=str(tmp_path / "run"))
    pause = 4.0
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[PauseThenFail(pause)])
    backup = tmp_path / "run" / "backup"
    saved = json.loads((backup / json.loads((backup / "latest.json").read_text())["checkpoint"]
                        / "training_metadata.json").read_text())
    assert saved["step"] == 2 and saved["run_state"]["train_seconds"] >= pause
    snapshot_file = snapshot_directory(config.output, 0.0001) / "train.json"
    taken = json.loads(snapshot_file.read_text())

    summary = train(config)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert summary["train_seconds"] >= saved["run_state"]["train_seconds"], "the clock restarted at the resume"
    assert json.loads(snapshot_file.read_text()) == taken, "a snapshot of the first start was written again"
    assert [item["steps"] for item in summary["snapshots"]] == [1]
