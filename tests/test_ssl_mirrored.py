"""Each SSL method: two 2-replica MirroredStrategy steps equal the single-device steps on the same global batches.

The comparison and its batch-norm treatment are explained in tests/ssl_mirrored_step.py. Negative controls with
the classic distributed bugs (negatives not gathered, queue filled with local keys only, Barlow Twins gradients
off by the world size) must fail the same comparison, which shows the check can tell.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ssl_mirrored_step import BUGS, OPTIONS

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def step_results():
    completed = subprocess.run(
        [sys.executable, "-m", "tests.ssl_mirrored_step", *OPTIONS, *BUGS], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return {result["method"]: result for result in results}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_replicas_equal_one(name, step_results):
    result = step_results[name]
    assert result["replicas"] == 2
    assert result["update_norm"] > 1e-2, "the steps must move the weights for the comparison to mean anything"
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-5, abs=1e-6)
    assert result["difference_norm"] < 1e-3 * result["update_norm"]


@pytest.mark.parametrize("name", sorted(BUGS))
def test_distributed_bugs_are_caught(name, step_results):
    result = step_results[name]
    assert result["difference_norm"] > 0.1 * result["update_norm"]
    assert result["mirrored_loss"] != pytest.approx(result["single_loss"], rel=1e-2)
