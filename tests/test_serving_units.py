"""Serving building blocks on their own: JSON depth, version policies, config files, tensor protos, the batcher."""

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("grpc", reason="the serving tests need the serving extra: pip install 'mssl-tf[serving]'")

import tensorflow as tf  # noqa: E402

from mssl_tf.serving.batching import BatchScheduler  # noqa: E402
from mssl_tf.serving.config import (  # noqa: E402
    BatchingOptions, VersionPolicy, parse_batching_parameters, parse_model_server_config, parse_ssl_config,
)
from mssl_tf.serving.errors import ServingError  # noqa: E402
from mssl_tf.serving.limits import Limits, json_depth  # noqa: E402
from mssl_tf.serving.tensors import to_ndarray, to_tensor_proto  # noqa: E402


def nesting(value) -> int:
    if isinstance(value, list):
        return 1 + max((nesting(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((nesting(item) for item in value.values()), default=0)
    return 0


@pytest.mark.parametrize("document", [
    {"instances": [[[[0], [255]]]]},
    {"signature_name": "a[[[{b", "inputs": {"x": [1, 2]}},
    {"k\\\"[[[": ["\\\\", ["\"]]]]", [[]]]]},
    [[], [[[]]], {"a": {"b": {}}}],
    "just a [string] with {brackets}",
])
def test_json_depth_matches_parsed_nesting(document):
    body = json.dumps(document).encode()
    for chunk_bytes in (1, 3, 1 << 20):  # across chunk borders too (escapes and strings split between chunks)
        assert json_depth(body, chunk_bytes) == nesting(document)


def test_json_depth_limit_is_an_invalid_argument():
    body = b'{"inputs": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}"
    with pytest.raises(ServingError) as caught:
        Limits(max_json_depth=32).check_json_depth(body)
    assert caught.value.code == "INVALID_ARGUMENT" and "--max_json_depth" in caught.value.message
    Limits(max_json_depth=41).check_json_depth(body)


def test_version_policies():
    on_disk = {1, 3, 7, 12}
    assert VersionPolicy().select(on_disk) == {12}
    assert VersionPolicy("latest", num_versions=2).select(on_disk) == {7, 12}
    assert VersionPolicy("all").select(on_disk) == on_disk
    assert VersionPolicy("specific", versions=frozenset({3, 4})).select(on_disk) == {3}
    with pytest.raises(ValueError, match="at least 1"):
        VersionPolicy("latest", num_versions=0)


def test_model_server_config_is_read_with_tf_serving_protos(tmp_path):
    configs = parse_model_server_config(f"""
        model_config_list {{
          config {{
            name: "encoder"  base_path: "{tmp_path}/encoder"  model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 2 }}
          }}
          config {{ name: "other" base_path: "relative/other" model_version_policy {{ all {{}} }} }}
          config {{ name: "third" base_path: "/third" model_version_policy {{ latest {{ num_versions: 3 }} }} }}
        }}""")
    encoder, other, third = configs
    assert encoder.version_policy == VersionPolicy("specific", versions=frozenset({1, 2}))
    assert encoder.version_labels == {"stable": 1, "canary": 2}
    assert other.version_policy.kind == "all" and other.base_path.endswith("/relative/other")
    assert third.version_policy == VersionPolicy("latest", num_versions=3)
    with pytest.raises(ValueError, match="model_platform"):
        parse_model_server_config('model_config_list { config { name: "a" base_path: "/a" model_platform: "tflite" } }')
    with pytest.raises(ValueError, match="repeated: a"):
        parse_model_server_config('model_config_list { config { name: "a" base_path: "/a" } '
                                  'config { name: "a" base_path: "/b" } }')


def test_batching_and_ssl_files():
    options = parse_batching_parameters("""
        max_batch_size { value: 64 }
        batch_timeout_micros { value: 2000 }
        num_batch_threads { value: 2 }
        allowed_batch_sizes: 32
        allowed_batch_sizes: 64
        enable_large_batch_splitting { value: true }   # newer TF Serving field: ignored here
    """)
    assert options == BatchingOptions(64, 2000, 10, 2, (32, 64))
    with pytest.raises(ValueError, match="end with max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 64 } allowed_batch_sizes: 32")
    tls = parse_ssl_config('server_key: "KEY" server_cert: "CERT" custom_ca: "CA" client_verify: true')
    assert (tls.server_key, tls.server_cert, tls.custom_ca, tls.client_verify) == ("KEY", "CERT", "CA", True)
    with pytest.raises(ValueError, match="custom_ca"):
        parse_ssl_config('server_key: "KEY" server_cert: "CERT" client_verify: true')


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    np.arange(6, dtype=np.uint8).reshape(6, 1),
    np.array([-3, 0, 2**31 - 1], np.int32),
    np.array([[1, -2**40]], np.int64),
    np.array([True, False]),
    np.array([0.5, -1.25], np.float16),
    np.array([b"png", b"\x00\xff"], dtype=object),
])
def test_tensor_protos_agree_with_tensorflow(array):
    ours = to_tensor_proto(array)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)  # TensorFlow reads what we write
    reference = tf.make_tensor_proto(array)
    np.testing.assert_array_equal(to_ndarray(reference), array)  # we read what TensorFlow writes
    assert ours.dtype == reference.dtype


def test_tensor_proto_value_fields_follow_tensorflow_rules():
    short = tf.make_tensor_proto(1.5, shape=[2, 3])  # one value fills the shape
    np.testing.assert_array_equal(to_ndarray(short), tf.make_ndarray(short))
    broken = to_tensor_proto(np.zeros((2, 2), np.float32))
    broken.tensor_content = broken.tensor_content[:-4]
    with pytest.raises(ServingError, match="needs 16") as caught:
        to_ndarray(broken, "images")
    assert caught.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError, match="--max_tensor_elements"):
        to_ndarray(to_tensor_proto(np.zeros((10, 10), np.uint8)), "images", max_elements=99)


class RecordingModel:
    """A batchable function that records the batch sizes it was called with: row i ↦ (2·row, sum of row)."""

    def __init__(self, delay=0.0):
        self.calls = []
        self.delay = delay

    def __call__(self, inputs):
        rows = inputs["x"]
        self.calls.append(len(rows))
        time.sleep(self.delay)
        return {"double": rows * 2, "total": rows.sum(axis=1)}


def submit_concurrently(scheduler, arrays):
    results, errors = [None] * len(arrays), []
    barrier = threading.Barrier(len(arrays))

    def send(index):
        barrier.wait()
        try:
            results[index] = scheduler.submit({"x": arrays[index]})
        except Exception as error:  # noqa: BLE001 - collected and asserted on
            errors.append(error)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(arrays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_batcher_merges_concurrent_requests_and_returns_each_its_rows():
    model = RecordingModel()
    scheduler = BatchScheduler(model, "x", BatchingOptions(max_batch_size=16, batch_timeout_micros=200_000,
                                                           num_batch_threads=1))
    arrays = [np.full((2, 3), index, np.float32) + np.arange(3) for index in range(8)]
    results, errors = submit_concurrently(scheduler, arrays)
    scheduler.close()
    assert not errors
    for array, result in zip(arrays, results):
        np.testing.assert_array_equal(result["double"], array * 2)
        np.testing.assert_array_equal(result["total"], array.sum(axis=1))
    assert sum(model.calls) == 16 and len(model.calls) < 8  # merged: fewer calls than requests
    assert max(model.calls) <= 16


def test_batcher_pads_to_allowed_sizes_and_runs_oversized_requests_alone():
    model = RecordingModel()
    scheduler = BatchScheduler(model, "x", BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 8),
                                                           num_batch_threads=1))
    result = scheduler.submit({"x": np.ones((3, 2), np.float32)})
    assert model.calls == [4] and result["double"].shape == (3, 2)  # padded to 4, cut back to 3
    result = scheduler.submit({"x": np.ones((11, 2), np.float32)})
    assert model.calls[-1] == 11 and result["total"].shape == (11,)
    scheduler.close()
    model.calls.clear()
    scheduler.submit({"x": np.ones((1, 2), np.float32)})  # after close: runs unbatched, does not hang
    assert model.calls == [1]


def test_batcher_refuses_work_beyond_its_queue_and_survives_model_errors():
    model = RecordingModel(delay=0.3)
    scheduler = BatchScheduler(model, "x", BatchingOptions(max_batch_size=2, max_enqueued_batches=1,
                                                           num_batch_threads=1))
    results, errors = submit_concurrently(scheduler, [np.ones((2, 1), np.float32)] * 4)
    assert errors and all(isinstance(error, ServingError) and error.code == "UNAVAILABLE" for error in errors)
    assert sum(result is not None for result in results) == 4 - len(errors)

    def failing(inputs):
        raise ServingError("INVALID_ARGUMENT", "bad rows")

    broken = BatchScheduler(failing, "x", BatchingOptions(max_batch_size=4, num_batch_threads=1))
    with pytest.raises(ServingError, match="bad rows"):
        broken.submit({"x": np.ones((1, 1), np.float32)})
    broken.close()
    scheduler.close()


def test_serve_flags_are_tensorflow_model_servers(tmp_path):
    from mssl_tf.cli import build_parser
    from mssl_tf.serving.cli import build_server

    (tmp_path / "batching.txt").write_text("max_batch_size { value: 32 } batch_timeout_micros { value: 500 }")
    args = build_parser().parse_args([
        "serve", "--port=0", "--rest_api_port=8599", "--model_name=encoder", f"--model_base_path={tmp_path}",
        "--enable_batching", f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        "--file_system_poll_wait_seconds=5", "--rest_api_timeout_in_ms=1500", "--monitoring_config_file=x",
    ])
    server = build_server(args)
    assert server.host == "127.0.0.1" and server.rest_api_port == 8599
    assert server.manager.batching == BatchingOptions(max_batch_size=32, batch_timeout_micros=500)
    assert server.manager.poll_wait_seconds == 5 and server.rest_api_timeout_seconds == 1.5
    assert [config.name for config in server.manager._configs.values()] == ["encoder"]
    args = build_parser().parse_args(["serve", "--enable_batching=false", f"--model_base_path={tmp_path}"])
    assert build_server(args).manager.batching is None and build_server(args).rest_api_port is None
    with pytest.raises(ValueError, match="exactly one"):
        build_server(build_parser().parse_args(["serve"]))


def test_missing_serving_extra_names_the_install_command(monkeypatch):
    from mssl_tf.serving._dependencies import require_serving_api

    monkeypatch.setitem(__import__("sys").modules, "tensorflow_serving.apis", None)
    with pytest.raises(ImportError, match=r"pip install 'mssl-tf\[serving\]'"):
        require_serving_api()


@pytest.mark.parametrize("array", [
    np.float32(1.5), np.arange(6).reshape(2, 3, 1), np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32),
    np.array([[True, False]]), np.array([np.nan, np.inf, -1.0]), np.zeros((2, 0, 3)), np.array([1e-45], np.float32),
    np.array([-5], np.int8), np.array([2**63 - 1], np.int64),
])
def test_array_json_text_is_json_dumps_of_tolist(array):
    from mssl_tf.serving.tensors import array_to_json, dumps_json

    assert array_to_json(array) == json.dumps(np.asarray(array).tolist(), separators=(",", ":"))
    document = {"signature_name": "x", "inputs": {"a": array, "b": [np.int32(3)]}}
    assert json.loads(dumps_json(document)) == json.loads(json.dumps(
        {"signature_name": "x", "inputs": {"a": np.asarray(array).tolist(), "b": [3]}}))


def test_deployment_files_parse_and_their_command_lines_run_unchanged_with_mssl_tf_serve():
    import re
    from pathlib import Path

    from mssl_tf.cli import build_parser

    root = Path(__file__).resolve().parents[1]
    configs = parse_model_server_config((root / "serving" / "models.config").read_text())
    zoo_entries = {path.stem for path in (root / "zoo").glob("*.json")}
    assert {config.name for config in configs} <= zoo_entries  # the served names are the zoo's export names
    assert all(config.base_path == f"/models/{config.name}" for config in configs)
    assert parse_batching_parameters((root / "serving" / "batching_parameters.txt").read_text()) == BatchingOptions(
        max_batch_size=64, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=100)
    compose = (root / "serving" / "compose.yaml").read_text()
    commands = [re.findall(r"- (--\S+)", block) for block in re.findall(r"command:\n((?:\s+- .*\n)+)", compose)]
    assert len(commands) == 2
    embeddings, few_shot = (build_parser().parse_args(["serve", *flags]) for flags in commands)
    assert embeddings.enable_batching and not few_shot.enable_batching
    assert embeddings.model_config_file == few_shot.model_config_file == "/config/models.config"
    assert (embeddings.port, embeddings.rest_api_port) == (8500, 8501)
