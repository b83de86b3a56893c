"""The command line end to end on real Omniglot: train → eval → results records → README table."""

import json

import pytest

from mssl_tf import cli, results
from mssl_tf.data import EpisodeSpec, omniglot
from mssl_tf.evaluation import evaluate
from mssl_tf.training import load_trained


def test_settings_parse_and_reject_garbage():
    assert cli.parse_settings("5w1s, 20w5s") == [(5, 1), (20, 5)]
    with pytest.raises(Exception, match="<ways>w<shots>s"):
        cli.parse_settings("5-way")


def test_missing_data_is_one_clear_error(tmp_path, capsys):
    code = cli.main(["eval", str(tmp_path / "model.keras"), "--data-dir", str(tmp_path)])
    assert code == 2
    assert "MSSL_TF_OMNIGLOT_DIR" in capsys.readouterr().err


def test_train_eval_and_results_table(tmp_path, omniglot_dir):
    run = tmp_path / "run"
    assert cli.main([
        "train", "--method", "protonet", "--data-dir", str(omniglot_dir), "--ways", "5", "--shots", "1",
        "--queries", "2", "--steps", "4", "--steps-per-epoch", "2", "--validate-episodes", "10",
        "--tensorboard", str(tmp_path / "logs"), "--output", str(run),
    ]) == 0
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*")), "TensorBoard wrote no event file"
    summary = json.loads((run / "train.json").read_text())
    assert summary["steps"] == 4 and len(summary["curve"]) == 2 and summary["train_seconds"] > 0

    records_dir = tmp_path / "records"
    assert cli.main([
        "eval", str(run), "--data-dir", str(omniglot_dir), "--settings", "5w1s,20w1s", "--episodes", "20",
        "--results-dir", str(records_dir), "--run-name", "tiny",
    ]) == 0
    records = results.read_records(records_dir)
    assert json.loads((records_dir / "tiny_training.json").read_text())["curve"]
    assert {(r["ways"], r["shots"]) for r in records} == {(5, 1), (20, 1)}
    trained, _ = load_trained(run)
    test_split = omniglot.load_split("test", omniglot_dir)
    for record in records:
        assert set(results.REQUIRED_FIELDS) <= set(record)
        assert record["episodes"] == 20 and record["labels_used"] is True
        assert (record["method"], record["split"], record["queries"]) == ("protonet", "test (Vinyals)", 15)
        assert record["command"]["train"].startswith("mssl-tf train")
        # The recorded numbers are the trained model's on those fixed episodes, recomputed here.
        expected = evaluate(trained, test_split, EpisodeSpec(record["ways"], record["shots"], 15), episodes=20)
        assert (record["accuracy"], record["ci95"], record["ece"]) == (expected["accuracy"], expected["ci95"],
                                                                       expected["ece"])
        assert record["accuracy"] > 2 * 100 / record["ways"]  # a trained ProtoNet is well above chance

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.TABLE_START}\nold\n{results.TABLE_END}\noutro\n")
    assert cli.main(["results", "--results-dir", str(records_dir), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "| tiny | protonet | yes |" in text and text.endswith("outro\n")


def test_confidence_interval_is_1_96_standard_errors():
    from mssl_tf.evaluation import confidence_interval

    mean, half_width = confidence_interval([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5
    assert half_width == pytest.approx(1.96 * (1 / 3) ** 0.5 / 2)


def test_pipeline_loads_exports_serves_and_queries(tmp_path, omniglot_dir, capsys):
    """The main job from the zoo: export, a real server on 127.0.0.1, embeddings equal to in-process ones."""
    from mssl_tf.pipeline import PipelineConfig, run

    summary = run(PipelineConfig(export_dir=str(tmp_path / "export"), episodes=20, file_episodes=5,
                                 data_dir=str(omniglot_dir)))
    assert (tmp_path / "export" / "omniglot-encoder" / "1" / "saved_model.pb").is_file()
    assert summary["embeddings_shape"] == [64, 64]
    assert summary["grpc_max_abs_difference"] < 1e-5 and summary["rest_max_abs_difference"] < 1e-5
    assert summary["served_5w1s"] == pytest.approx(summary["in_process_5w1s"])
    assert summary["served_5w1s"][0] > 0.9
    assert "[4/4]" in capsys.readouterr().out


@pytest.mark.slow  # the training path also runs by default on a folder (tests/test_pipeline_images.py)
def test_pipeline_trains_then_reuses_the_trained_model(tmp_path, omniglot_dir, capsys):
    workdir = tmp_path / "pipeline"
    arguments = ["pipeline", "--train", "--data-dir", str(omniglot_dir), "--workdir", str(workdir), "--minutes",
                 "0.05", "--episodes", "5", "--export-dir", str(tmp_path / "export")]
    assert cli.main(arguments) == 0
    assert "training ProtoNet" in capsys.readouterr().out
    assert (workdir / "model.keras").is_file()
    assert cli.main(arguments) == 0
    assert "loading the model trained earlier" in capsys.readouterr().out
