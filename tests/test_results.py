"""README's results table from records: few-shot columns, then the frozen-encoder protocols of the same runs."""

from mssl_tf import results


def record(run, **fields):
    return {"run": run, "method": "simclr", "labels_used": False, "train_seconds": 600.0, "split": "test (Vinyals)",
            "accuracy": 90.0, "ci95": 0.5, **fields}


def test_frozen_protocols_join_their_run_row():
    few_shot = [record("a", ways=5, shots=1), record("b", ways=5, shots=1, accuracy=80.0)]
    frozen = [record("a", protocol="knn", accuracy=59.41, ci95=0.74), record("orphan", protocol="linear")]
    lines = results.render_table(few_shot, frozen).splitlines()
    assert lines[0] == "| Run | Method | Labels in training | Training time | 5-way 1-shot | kNN |"
    assert lines[2] == "| a | simclr | no | 10 min | 90.00 ± 0.50 | 59.41 ± 0.74 |"
    assert lines[3] == "| b | simclr | no | 10 min | 80.00 ± 0.50 | – |"
    assert len(lines) == 4  # a run with frozen-encoder scores only makes no row


def test_training_time_counts_what_a_run_started_from():
    lines = results.render_table([record("byol-then-protonet", ways=5, shots=1, pretraining_seconds=590.0)]).splitlines()
    assert lines[2] == "| byol-then-protonet | simclr | no | 20 min (10 before + 10) | 90.00 ± 0.50 |"
    assert results.training_time(0.0) == "none"


def test_adaptation_table_and_readme_update(tmp_path):
    curve = [{"steps": 0, "accuracy": 20.0, "ci95": 0.0}, {"steps": 1, "accuracy": 91.5, "ci95": 0.61}]
    adaptation = record("memory-run", method="memory", ways=5, shots=1, adaptation=curve)
    lines = results.render_adaptation_table([adaptation]).splitlines()
    assert lines[0] == "| Run | Method | Setting | 0 steps | 1 step |"
    assert lines[2] == "| memory-run | memory | 5-way 1-shot | 20.00 ± 0.00 | 91.50 ± 0.61 |"

    records = tmp_path / "records"
    results.write_record(records, "memory-run_5w1s", {**record("memory-run", ways=5, shots=1), "episodes": 600,
                                                      "dataset": "omniglot", "command": {}, "commit": "x"})
    (records / "memory-run_5w1s_adaptation.json").write_text(__import__("json").dumps(adaptation))
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{results.TABLE_START}\nold\n{results.TABLE_END}\nb\n"
                      f"{results.ADAPTATION_START}\nold\n{results.ADAPTATION_END}\nc\n")
    results.update_readme(readme, records)
    text = readme.read_text()
    assert "old" not in text and "| memory-run | simclr | no | 10 min | 90.00 ± 0.50 |" in text
    assert "| memory-run | memory | 5-way 1-shot | 20.00 ± 0.00 | 91.50 ± 0.61 |" in text
    assert text.startswith("a\n") and text.endswith("c\n")


def test_readme_tables_hold_omniglot_records_only(tmp_path):
    records = tmp_path / "records"
    common = {"episodes": 600, "command": {}, "commit": "x", "ways": 5, "shots": 1}
    results.write_record(records, "omniglot-run_5w1s", {**record("omniglot-run"), **common, "dataset": "omniglot"})
    results.write_record(records, "clipart-run_5w1s", {**record("clipart-run"), **common,
                                                       "dataset": "imagefolder:/usr/share/openclipart/png",
                                                       "split": "test (seeded class partition)"})
    readme = tmp_path / "README.md"
    readme.write_text(f"{results.TABLE_START}\nold\n{results.TABLE_END}\n")
    results.update_readme(readme, records)
    text = readme.read_text()
    assert "| omniglot-run |" in text and "clipart-run" not in text


def test_records_with_and_without_calibration_make_the_same_table(tmp_path):
    """Few-shot records carry `ece` since calibration is measured; older ones have none: both read, same row."""
    records = tmp_path / "records"
    common = {"episodes": 600, "command": {}, "commit": "x", "ways": 5, "shots": 1, "dataset": "omniglot"}
    results.write_record(records, "old_5w1s", {**record("old"), **common})
    results.write_record(records, "new_5w1s", {**record("new"), **common, "ece": 3.21})
    read = {entry["run"]: entry for entry in results.read_records(records)}
    assert set(read) == {"old", "new"} and read["new"]["ece"] == 3.21 and "ece" not in read["old"]
    lines = results.render_table(list(read.values())).splitlines()
    assert sorted(lines[2:]) == ["| new | simclr | no | 10 min | 90.00 ± 0.50 |",
                                 "| old | simclr | no | 10 min | 90.00 ± 0.50 |"]


def test_the_commit_is_dirty_for_code_changes_but_not_for_rewritten_records(tmp_path):
    import subprocess

    from mssl_tf.results import current_commit

    def git(*arguments):
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "benchmarks" / "results" / "record.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = current_commit(tmp_path)
    assert len(clean) == 40
    (tmp_path / "benchmarks" / "results" / "record.json").write_text('{"seconds": 1}\n')  # a benchmark's record
    assert current_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("a = 2\n")
    assert current_commit(tmp_path) == clean + "-dirty"
