"""Meta-SSL methods on unsupervised tasks: a 2-replica MirroredStrategy step equals the single-device step."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.meta_ssl_mirrored_step import OPTIONS

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def step_results():
    completed = subprocess.run(
        [sys.executable, "-m", "tests.meta_ssl_mirrored_step", *OPTIONS], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return {result["method"]: result for result in results}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_replicas_equal_one(name, step_results):
    result = step_results[name]
    assert result["replicas"] == 2
    assert result["update_norm"] > 1e-3, "the step must move the weights for the comparison to mean anything"
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-5, abs=1e-6)
    # A gradient summed without the 1/replicas scaling (or averaged twice) would differ by the whole update.
    assert result["difference_norm"] < 1e-3 * result["update_norm"]
