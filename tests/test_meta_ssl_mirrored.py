"""Meta-SSL methods on unsupervised tasks: a 2-replica MirroredStrategy step equals the single-device step."""

import pytest

from tests.workers.meta_ssl_mirrored_step import BUGS, OPTIONS
from tests.workers.replica_check import assert_replicas_agree, assert_replicas_disagree, run_step_script

pytestmark = pytest.mark.slow  # 2-logical-CPU replica checks in subprocesses, with controls


@pytest.fixture(scope="module")
def step_results():
    return run_step_script("tests.workers.meta_ssl_mirrored_step", [*OPTIONS, *BUGS])


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_replicas_equal_one(name, step_results):
    assert_replicas_agree(step_results[name])


@pytest.mark.parametrize("name", sorted(BUGS))
def test_a_step_that_is_right_on_one_device_only_is_caught(name, step_results):
    """Negative control: the same comparison fails on a step that is right on one device only (a forgotten 1/replicas
    scaling, batch statistics shared across the replicas' tasks)."""
    assert_replicas_disagree(step_results[name])
