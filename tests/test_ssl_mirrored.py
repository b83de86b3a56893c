"""Each SSL method: two 2-replica MirroredStrategy steps equal the single-device steps on the same global batches.

The comparison and its batch-norm treatment are explained in tests/workers/ssl_mirrored_step.py. Negative controls with
the classic distributed bugs (negatives not gathered, queue filled with local keys only, Barlow Twins gradients
off by the world size) must fail the same comparison, which shows the check can tell.
"""

import pytest

from tests.workers.replica_check import assert_replicas_agree, run_step_script
from tests.workers.ssl_mirrored_step import BUGS, OPTIONS

pytestmark = pytest.mark.slow  # 2-logical-CPU replica checks in subprocesses, with controls


@pytest.fixture(scope="module")
def step_results():
    return run_step_script("tests.workers.ssl_mirrored_step", [*OPTIONS, *BUGS])


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_replicas_equal_one(name, step_results):
    assert_replicas_agree(step_results[name], minimum_update=1e-2)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_distributed_bugs_are_caught(name, step_results):
    result = step_results[name]
    assert result["difference_norm"] > 0.1 * result["update_norm"]
    assert result["mirrored_loss"] != pytest.approx(result["single_loss"], rel=1e-2)
