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
