"""A 2-replica MirroredStrategy step equals the single-device step (loss and updated trainable weights)."""

import pytest

from tests.workers.mirrored_step import OPTIONS
from tests.workers.replica_check import assert_replicas_agree, run_step_script


@pytest.fixture(scope="module")
def step_results():
    return run_step_script("tests.workers.mirrored_step", OPTIONS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_replicas_equal_one(name, step_results):
    assert_replicas_agree(step_results[name])
