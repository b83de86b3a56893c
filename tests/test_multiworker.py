"""Two worker processes (MultiWorkerMirroredStrategy on 127.0.0.1) train ProtoNet and MAML with the distributed
driver: both end with identical weights, equal to `model.fit` in one process on the same global batches. A negative
control (ProtoNet that forgets the 1/replicas loss scaling, tests/workers/multiworker_bug_worker.py) must fail the
same comparison."""

import numpy as np
import pytest

from tests.workers import cluster
from tests.workers.multiworker_worker import OPTIONS, STEPS

pytestmark = pytest.mark.slow  # 2-worker clusters on 127.0.0.1


def load(path):
    arrays = np.load(path)
    return [arrays[f"arr_{index}"] for index in range(len(arrays.files))]


def flat(weights, indices=None):
    indices = range(len(weights)) if indices is None else indices
    return np.concatenate([weights[index].ravel() for index in indices])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("multiworker")
    processes, _ = cluster.start_workers(["equivalence", directory], directory, "worker")
    cluster.finish(processes, timeout=240)
    lines = cluster.json_lines(directory / "worker_0.log") + cluster.json_lines(directory / "worker_1.log")
    return directory, {(line["method"], line["task"]): line for line in lines}


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_workers_end_with_identical_weights(method, run):
    directory, lines = run
    first, second = load(directory / f"{method}_worker0.npz"), load(directory / f"{method}_worker1.npz")
    initial = load(directory / f"{method}_worker0_initial.npz")
    assert lines[method, "worker0"]["replicas"] == 2 and lines[method, "worker0"]["steps"] == STEPS
    assert np.linalg.norm(flat(first) - flat(initial)) > 1e-2, "training must move the weights"
    # Every weight, batch-norm moving statistics included (the driver averages them across replicas).
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert lines[method, "worker0"]["loss"] == lines[method, "worker1"]["loss"]


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_two_workers_equal_one_process(method, run):
    directory, lines = run
    trainable = lines[method, "worker0"]["trainable"]
    distributed = flat(load(directory / f"{method}_worker0.npz"), trainable)
    single = flat(load(directory / f"{method}_reference.npz"), trainable)
    initial = flat(load(directory / f"{method}_worker0_initial.npz"), trainable)
    update = np.linalg.norm(single - initial)
    assert update > 1e-2
    # Plain SGD: a gradient summed over 2 replicas without the 1/2 scaling (or a batch drawn wrongly) would
    # differ by about the whole update.
    assert np.linalg.norm(distributed - single) < 1e-3 * update
    assert lines[method, "worker0"]["loss"][0] == pytest.approx(lines[method, "reference"]["loss"][0], rel=1e-5)


def distributed_reference_and_initial(directory, name, lines):
    trainable = lines[name, "worker0"]["trainable"]
    return (flat(load(directory / f"{name}_worker0.npz"), trainable),
            flat(load(directory / f"{name}_reference.npz"), trainable),
            flat(load(directory / f"{name}_worker0_initial.npz"), trainable))


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("multiworker_bug")
    processes, _ = cluster.start_workers([directory], directory, "worker", module="tests.workers.multiworker_bug_worker")
    cluster.finish(processes, timeout=240)
    lines = cluster.json_lines(directory / "worker_0.log") + cluster.json_lines(directory / "worker_1.log")
    return directory, {(line["method"], line["task"]): line for line in lines}


def test_a_step_that_forgets_the_replica_scaling_fails_the_comparison(broken_run):
    """Negative control: the bound of `test_two_workers_equal_one` is missed by about the whole update."""
    directory, lines = broken_run
    name = "protonet_unscaled_loss_bug"
    assert lines[name, "worker0"]["replicas"] == 2 and lines[name, "worker0"]["steps"] == STEPS
    distributed, single, initial = distributed_reference_and_initial(directory, name, lines)
    update = np.linalg.norm(single - initial)
    assert update > 1e-2
    assert np.linalg.norm(distributed - single) > 0.1 * update
    # Both workers still agree with each other: only the comparison with one process can tell.
    np.testing.assert_array_equal(distributed, flat(load(directory / f"{name}_worker1.npz"),
                                                    lines[name, "worker0"]["trainable"]))


# === Configuration errors and helpers (no cluster needed) ===
def test_multiworker_needs_a_valid_tf_config(monkeypatch):
    from mssl_tf import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable, which is not set.*docs/multiworker.md"):
        distribute.get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", cluster.tf_config([1234, 1235], 2))
    with pytest.raises(ValueError, match="not a 'chief' or 'worker' listed in its cluster"):
        distribute.get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", cluster.tf_config([1234, 1235], 1))
    with pytest.raises(ValueError, match="drop --devices"):
        distribute.get_strategy("multiworker", devices=2)
    with pytest.raises(ValueError, match="Unknown strategy 'ring'"):
        distribute.get_strategy("ring")


def test_single_process_is_its_own_chief(tmp_path):
    from mssl_tf import distribute

    strategy = distribute.get_strategy("default")
    assert distribute.is_chief(strategy) and distribute.task(strategy) == (None, 0)
    assert distribute.worker_count(strategy) == 1
    assert distribute.write_directory(tmp_path, strategy) == tmp_path
    assert distribute.per_replica_batch(4, strategy) == 4
