"""The peers benchmark (benchmarks/peers/): its summaries on a fake timing table, and that its PyTorch steps
compute what mssl-tf's compute (same loss and gradient at the same weights and inputs).

The second part needs the peer venv (`bash benchmarks/peers/make_venv.sh`, about 5.5 GB); without it, as in CI,
it is skipped.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"
PEER_PYTHON = PEERS / ".venv" / "bin" / "python"
sys.path.insert(0, str(PEERS))
import compare  # noqa: E402
import cost_growth  # noqa: E402


def run(step_seconds, first=10.0, rss=500.0):
    return {"step_seconds": step_seconds, "first_step_seconds": first, "max_rss_mb": rss}


def test_speedups_are_their_median_over_ours_of_per_round_medians():
    comparison = {"name": "simclr", "task": "t", "images_per_step": 256}
    runs = {
        # Round medians 1.2 and 1.0 (the 5.0 and 9.0 outliers must not count): median 1.1.
        "ours/simclr": [run([1.0, 1.2, 5.0], first=30.0), run([1.1, 0.9, 1.0], first=20.0)],
        # Round medians 2.2 and 2.2: median 2.2, so ours is 2x faster.
        "theirs/simclr": [run([2.0, 2.2, 2.4], first=3.0), run([2.2, 2.1, 9.0], first=5.0)],
    }
    summary = compare.summarize_comparison(comparison, runs)
    ours, theirs = summary["entrants"]["ours/simclr"], summary["entrants"]["theirs/simclr"]
    assert ours["median_step_seconds_per_round"] == [1.2, 1.0]
    assert ours["median_step_seconds"] == pytest.approx(1.1)
    assert theirs["median_step_seconds"] == pytest.approx(2.2)
    assert ours["median_first_step_seconds"] == pytest.approx(25.0)
    assert ours["images_per_second"] == pytest.approx(256 / 1.1, abs=0.1)
    assert summary["speedups"] == {"ours/simclr over theirs/simclr": pytest.approx(2.0)}


def test_every_ours_entrant_is_compared_with_every_other():
    runs = {"ours/protonet": [run([1.0])], "ours/plain_tf_protonet": [run([3.0])], "theirs/protonet": [run([2.0])]}
    speedups = compare.summarize_comparison({"name": "protonet", "task": "t"}, runs)["speedups"]
    assert speedups == {
        "ours/protonet over ours/plain_tf_protonet": pytest.approx(3.0),
        "ours/protonet over theirs/protonet": pytest.approx(2.0),
        "ours/plain_tf_protonet over ours/protonet": pytest.approx(1 / 3, abs=1e-3),
        "ours/plain_tf_protonet over theirs/protonet": pytest.approx(2 / 3, abs=1e-3),
    }


def test_sides_alternate_which_goes_first():
    entrants = [("ours", "maml", []), ("theirs", "maml_learn2learn", []), ("theirs", "maml_torch_func", [])]
    assert [side for side, _, _ in compare.entrant_order(entrants, 0)] == ["ours", "theirs", "theirs"]
    assert [side for side, _, _ in compare.entrant_order(entrants, 1)] == ["theirs", "theirs", "ours"]
    assert [workload for _, workload, _ in compare.entrant_order(entrants, 1)][:2] == [
        "maml_learn2learn", "maml_torch_func"]


def test_memory_rows_are_sorted_by_inner_steps_with_what_the_step_added():
    def memory(peak, before):
        return {"max_rss_mb": peak, "rss_before_first_step_mb": before}

    rows = compare.summarize_memory({
        10: {"ours/maml": memory(2500.0, 700.0), "theirs/maml_learn2learn": memory(4000.0, 1100.0)},
        1: {"ours/maml": memory(900.0, 700.0), "theirs/maml_learn2learn": memory(1300.0, 1100.0)},
    })
    assert [row["inner_steps"] for row in rows] == [1, 10]
    assert rows[1]["ours/maml"]["step_mb"] == pytest.approx(1800.0)
    assert rows[1]["theirs/maml_learn2learn"]["step_mb"] == pytest.approx(2900.0)
    assert rows[0]["ours/maml"]["max_rss_mb"] == 900.0


def test_the_torch_func_stand_in_is_timed_with_or_without_learn2learn():
    def maml_peers(available):
        table = compare.comparisons(available)
        return [workload for side, workload, _ in table[0]["entrants"] if side == "theirs"]

    assert maml_peers(True) == ["maml_learn2learn", "maml_torch_func"]
    assert maml_peers(False) == ["maml_torch_func"]


def test_cost_growth_varies_one_factor_at_a_time_around_the_issue_task():
    chosen = cost_growth.points({"inner_steps": (1, 5), "ways": (5, 60)}, cost_growth.BASE)
    assert [(factor, shape[factor]) for factor, shape in chosen] == [
        ("inner_steps", 1), ("inner_steps", 5), ("ways", 5), ("ways", 60)]
    for factor, shape in chosen:
        assert {name: value for name, value in shape.items() if name != factor} == {
            name: value for name, value in cost_growth.BASE.items() if name != factor}
    assert cost_growth.BASE == {"ways": 5, "shots": 1, "queries": 15, "meta_batch": 32, "inner_steps": 1}
    arguments = cost_growth.shape_arguments(chosen[3][1])
    assert arguments[arguments.index("--ways") + 1] == "60" and "--meta-batch" in arguments


def test_cost_growth_ratio_is_learn2learn_seconds_over_ours():
    point = cost_growth.summarize_point("ways", {**cost_growth.BASE, "ways": 20}, {
        "ours/maml": {**run([2.0, 4.0, 3.0]), "max_rss_mb": 900.0},
        "theirs/maml_learn2learn": {**run([6.0, 6.5, 5.5])}})
    assert point["entrants"]["ours/maml"]["median_step_seconds"] == pytest.approx(3.0)
    assert point["speedup_over_learn2learn"] == pytest.approx(2.0)
    table = cost_growth.markdown_table({"points": [point]})
    assert table.splitlines()[-1] == "| ways | 20 | 1 | 15 | 32 | 1 | 3.0 | 6.0 | 2.0 |"


def test_cost_growth_records_a_point_that_ran_out_of_memory_and_gives_no_ratio():
    killed = compare.WorkerFailed("worker exited with -9", -9, 23000.5)
    point = cost_growth.summarize_point("ways", {**cost_growth.BASE, "ways": 60}, {
        "ours/maml": {"failed": cost_growth.failure_reason(killed), "max_rss_mb": 23000.5},
        "theirs/maml_learn2learn": run([9.0, 8.0, 10.0])})
    assert "out of memory" in point["entrants"]["ours/maml"]["failed"]
    assert "speedup_over_learn2learn" not in point
    assert cost_growth.markdown_table({"points": [point]}).splitlines()[-1] == (
        "| ways | 60 | 1 | 15 | 32 | 1 | out of memory | 9.0 |  |")


# === Same numbers on both sides (needs the peer venv) ===
needs_peer_venv = pytest.mark.skipif(
    not PEER_PYTHON.exists(),
    reason="no benchmarks/peers/.venv (PyTorch, learn2learn): `nice -n 19 bash benchmarks/peers/make_venv.sh`")


def conv4_weights(rng, ways=None):
    """Weights in mssl-tf's layout, named as theirs.py's --check reads them."""
    weights, channels = {}, 1
    for block in range(4):
        weights[f"block{block}_kernel"] = rng.normal(0, np.sqrt(2 / (9 * channels)), (3, 3, channels, 64))
        weights[f"block{block}_gamma"] = 1 + 0.2 * rng.normal(size=64)
        weights[f"block{block}_beta"] = 0.2 * rng.normal(size=64)
        channels = 64
    if ways:
        weights["classifier_kernel"] = 0.3 * rng.normal(size=(64, ways))
        weights["classifier_bias"] = 0.1 * rng.normal(size=ways)
    return {name: value.astype(np.float32) for name, value in weights.items()}


def set_conv4(backbone, weights, classifier=None):
    for block in range(4):
        backbone.get_layer(f"block{block}_conv").kernel.assign(weights[f"block{block}_kernel"])
        backbone.get_layer(f"block{block}_bn").gamma.assign(weights[f"block{block}_gamma"])
        backbone.get_layer(f"block{block}_bn").beta.assign(weights[f"block{block}_beta"])
    if classifier is not None:
        classifier.kernel.assign(weights["classifier_kernel"])
        classifier.bias.assign(weights["classifier_bias"])


def conv4_variables(backbone, classifier=None):
    variables = {}
    for block in range(4):
        variables[f"block{block}_kernel"] = backbone.get_layer(f"block{block}_conv").kernel
        variables[f"block{block}_gamma"] = backbone.get_layer(f"block{block}_bn").gamma
        variables[f"block{block}_beta"] = backbone.get_layer(f"block{block}_bn").beta
    if classifier is not None:
        variables.update(classifier_kernel=classifier.kernel, classifier_bias=classifier.bias)
    return variables


def ours_loss_and_gradients(model, variables, batch):
    with tf.GradientTape() as tape:
        losses, _ = model.meta_batch_learn({key: tf.constant(value) for key, value in batch.items()}, training=True)
        loss = tf.reduce_mean(losses)
    gradients = tape.gradient(loss, list(variables.values()))
    return float(loss), {name: gradient.numpy() for name, gradient in zip(variables, gradients)}


def theirs_loss_and_gradients(tmp_path, arrays):
    source, target = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(source, **arrays)
    subprocess.run([str(PEER_PYTHON), str(PEERS / "theirs.py"), "--check", str(source), str(target)], check=True)
    return dict(np.load(target))


def assert_same_gradients(theirs, ours, prefix):
    for name, value in ours.items():
        scale = np.abs(value).max()
        np.testing.assert_allclose(theirs[f"{prefix}/{name}"], value, rtol=2e-3, atol=2e-3 * scale, err_msg=name)


@needs_peer_venv
def test_peer_second_order_maml_has_our_loss_and_meta_gradient(tmp_path):
    import mssl_tf

    rng = np.random.default_rng(0)
    ways, tasks, inner_steps, rate = 3, 2, 2, 0.4
    weights = conv4_weights(rng, ways)
    batch = {
        "support_images": rng.random((tasks, ways, 28, 28, 1), dtype=np.float32),
        "support_labels": np.tile(np.arange(ways, dtype=np.int32), [tasks, 1]),
        "query_images": rng.random((tasks, 2 * ways, 28, 28, 1), dtype=np.float32),
        "query_labels": np.tile(np.repeat(np.arange(ways, dtype=np.int32), 2), [tasks, 1]),
    }
    results = {}
    for first_order in (False, True):
        model = mssl_tf.build_method("maml", mssl_tf.conv4(), ways=ways, inner_steps=inner_steps,
                                     inner_learning_rate=rate, first_order=first_order)
        set_conv4(model.backbone, weights, model.classifier)
        results[first_order] = ours_loss_and_gradients(model, conv4_variables(model.backbone, model.classifier), batch)
    (loss, gradients), (_, first_order_gradients) = results[False], results[True]
    # The second-order term is visible at these weights, so a first-order peer could not pass.
    assert np.abs(gradients["block0_gamma"] - first_order_gradients["block0_gamma"]).max() > 0.05 * np.abs(
        gradients["block0_gamma"]).max()
    theirs = theirs_loss_and_gradients(tmp_path, {
        "workload": "maml", "ways": ways, "inner_steps": inner_steps, "inner_learning_rate": rate, **weights, **batch})
    variants = [key.split("/")[0] for key in theirs if key.endswith("/loss")]
    assert "maml_torch_func" in variants
    for variant in variants:
        assert float(theirs[f"{variant}/loss"]) == pytest.approx(loss, rel=1e-4), variant
        assert_same_gradients(theirs, gradients, variant)


@needs_peer_venv
def test_peer_protonet_has_our_loss_and_gradient(tmp_path):
    import mssl_tf

    rng = np.random.default_rng(1)
    ways, shots, queries = 4, 2, 3
    weights = conv4_weights(rng)
    support = rng.random((ways * shots, 28, 28, 1), dtype=np.float32)
    query = rng.random((ways * queries, 28, 28, 1), dtype=np.float32)
    model = mssl_tf.build_method("protonet", mssl_tf.conv4())
    set_conv4(model.backbone, weights)
    batch = {"support_images": support[None], "support_labels": np.repeat(np.arange(ways, dtype=np.int32), shots)[None],
             "query_images": query[None], "query_labels": np.repeat(np.arange(ways, dtype=np.int32), queries)[None]}
    loss, gradients = ours_loss_and_gradients(model, conv4_variables(model.backbone), batch)
    theirs = theirs_loss_and_gradients(tmp_path, {
        "workload": "protonet", "ways": ways, "shots": shots, **weights, "support_images": support,
        "query_images": query, "query_labels": batch["query_labels"][0]})
    assert float(theirs["protonet/loss"]) == pytest.approx(loss, rel=1e-4)
    assert_same_gradients(theirs, gradients, "protonet")
