"""Hostile clients against the embedded server over 127.0.0.1, with clients this project did not write.

Each test is one of issue 15's reliability and security items: unbounded few-shot classes, REST worker
exhaustion by idle and slow sockets, HTTP framing and error bodies, bad inputs' codes, network reload, the UNIX
socket's credentials, memory admission and client deadlines. The clients are TF Serving's own gRPC stubs
(tensorflow-serving-api), `http.client` and raw sockets.
"""

import json
import os
import socket
import stat
import threading
import time

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="the serving tests need the serving extra: pip install 'mssl-tf[serving]'")

from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from mssl_tf.serving import ModelServer  # noqa: E402
from mssl_tf.serving.config import BatchingOptions, ModelConfig  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.tensors import to_tensor_proto  # noqa: E402
from mssl_tf.serving.testing import write_test_model  # noqa: E402

HEADER_SECONDS = 2.0


def images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    write_test_model(root / "encoder", 1, busy_seconds=4.0, strings=True)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"\x08\x01 this is not a SavedModel \xff\xff")
    return root


@pytest.fixture(scope="module")
def server(base):
    configs = [ModelConfig("encoder", str(base / "encoder")), ModelConfig("broken", str(base / "broken"))]
    with ModelServer(configs, port=0, rest_api_port=0, poll_wait_seconds=0, max_num_load_retries=0,
                     rest_api_header_timeout_seconds=HEADER_SECONDS) as running:
        yield running


def predict(port, inputs, signature="", model="encoder", timeout=20):
    """A Predict call with TF Serving's stub: ("OK", response) or (code name, details)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto) else to_tensor_proto(value))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return "OK", prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name, error.details()


def raw_http(port, data: bytes, timeout=10.0):
    """Sends `data` on a fresh connection; returns (status, headers text, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        while length is not None and len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else None
    return status, head.decode("latin-1"), body


def post(port, path, document, timeout=20.0):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, json.dumps(document), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


FEW_SHOT = {"support_images": images(2), "query_images": images(1)}


# --- item 2: few_shot's number of classes ---

@pytest.mark.parametrize("labels, words", [
    ([0, 5000], "limit of 1024 classes"),
    ([0, 2], "every class 0..ways-1"),
    ([-1, 0], "0..ways-1"),
])
def test_few_shot_refuses_labels_beyond_the_bound_or_with_gaps(server, labels, words):
    inputs = {**FEW_SHOT, "support_labels": np.array(labels, np.int32)}
    code, details = predict(server.grpc_port, inputs, signature="few_shot")
    assert code == "INVALID_ARGUMENT" and words in details, details
    status, answer = post(server.rest_port, "/v1/models/encoder:predict", {"signature_name": "few_shot", "inputs": {
        name: value.tolist() for name, value in inputs.items()}})
    assert status == 400 and words in answer["error"], answer
    code, response = predict(server.grpc_port, {**FEW_SHOT, "support_labels": np.array([1, 0], np.int32)},
                             signature="few_shot")
    assert code == "OK" and list(response.outputs["logits"].tensor_shape.dim[1:])[0].size == 2


def test_few_shot_with_the_largest_label_answers_at_once_without_allocating(server):
    inputs = {"support_images": images(1), "query_images": images(1),
              "support_labels": np.array([2**31 - 2], np.int32)}
    start, peak = time.monotonic(), peak_rss_bytes(os.getpid())  # the server runs in this process
    code, details = predict(server.grpc_port, inputs, signature="few_shot")
    assert code == "INVALID_ARGUMENT" and "1024 classes" in details
    assert time.monotonic() - start < 15
    growth = peak_rss_bytes(os.getpid()) - peak  # the per-class counts alone would be 8 GiB
    assert growth < 1 << 30, f"peak RSS grew by {growth >> 20} MiB"


# --- item 1: REST worker exhaustion ---

class Slowloris(threading.Thread):
    """Sends a request's headers one byte every `interval` seconds and records when the server cut it off."""

    def __init__(self, port, interval=0.25):
        super().__init__(daemon=True)
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.interval = interval
        self.closed_after = None
        self.stop = threading.Event()

    def run(self):
        start = time.monotonic()
        data = b"GET /v1/models/encoder HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10000
        try:
            for byte in data:
                if self.stop.is_set():
                    return
                self.socket.sendall(bytes([byte]))
                time.sleep(self.interval)
        except OSError:
            self.closed_after = time.monotonic() - start
        finally:
            self.socket.close()


def test_rest_answers_while_idle_and_slow_sockets_are_open_and_cuts_slow_ones_off(server):
    import http.client

    idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) for _ in range(200)]
    slow = [Slowloris(server.rest_port) for _ in range(8)]
    keep_alive = [http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=15) for _ in range(12)]
    try:
        for client in slow:
            client.start()
        time.sleep(0.5)
        for _ in range(2):  # more kept-alive clients than REST threads, each served twice
            for connection in keep_alive:
                connection.request("GET", "/v1/models/encoder")
                response = connection.getresponse()
                assert response.status == 200 and b"AVAILABLE" in response.read()
        status, answer = post(server.rest_port, "/v1/models/encoder:predict", {"instances": images(2).tolist()},
                              timeout=15)
        assert status == 200 and np.shape(answer["predictions"]) == (2, 64)
        # The header deadline does not move when a byte arrives: every slowloris is cut off.
        deadline = time.monotonic() + HEADER_SECONDS + 20
        while time.monotonic() < deadline and any(client.closed_after is None for client in slow):
            time.sleep(0.2)
        assert all(client.closed_after is not None for client in slow), [client.closed_after for client in slow]
        # So is an idle socket: it reads end-of-stream.
        idle[0].settimeout(HEADER_SECONDS + 20)
        assert idle[0].recv(1) == b""
    finally:
        for client in slow:
            client.stop.set()
        for connection in [*idle]:
            connection.close()
        for connection in keep_alive:
            connection.close()


def test_connections_beyond_the_cap_are_closed_and_the_server_stays_reachable(base):
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, rest_api_port=0, poll_wait_seconds=0,
                     rest_api_max_connections=20) as capped:
        held = [socket.create_connection(("127.0.0.1", capped.rest_port), timeout=10) for _ in range(20)]
        try:
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", capped.rest_port), timeout=10) as extra:
                try:
                    closed = extra.recv(1) == b""
                except ConnectionResetError:
                    closed = True
                assert closed
        finally:
            for connection in held:
                connection.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = post(capped.rest_port, "/v1/models/encoder:predict", {"instances": images(1).tolist()})
                break
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 200


# --- item 1 (framing) and item 8 (codes and bodies of the HTTP layer) ---

@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/models/encoder:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/models/encoder:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/models/encoder:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    b"GET /v1/models/encoder\r\n\r\n",
    b"BREW /v1/models/encoder HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/models/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/models/encoder HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % index for index in range(300)) + b"\r\n",
], ids=["length-and-chunked", "two-lengths", "negative-length", "http-0.9", "unknown-method", "long-line",
        "many-headers"])
def test_malformed_http_gets_400_with_a_json_error_body(server, request_bytes):
    status, head, body = raw_http(server.rest_port, request_bytes)
    assert status == 400, head
    assert "application/json" in head.lower() and "error" in json.loads(body), body[:200]
    assert post(server.rest_port, "/v1/models/encoder:predict", {"instances": images(1).tolist()})[0] == 200


def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(server):
    body = json.dumps({"instances": images(1).tolist()}).encode()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as connection:
        connection.sendall(b"POST /v1/models/encoder:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body))
        answers = connection.makefile("rb")
        assert answers.readline().startswith(b"HTTP/1.1 100")
        assert answers.readline() == b"\r\n"
        connection.sendall(body)
        assert answers.readline().startswith(b"HTTP/1.1 200")


def test_bad_base64_is_a_400(server):
    status, answer = post(server.rest_port, "/v1/models/encoder:predict",
                          {"signature_name": "lengths", "instances": [{"b64": "not base64!"}]})
    assert status == 400 and "base64" in answer["error"], answer
    status, answer = post(server.rest_port, "/v1/models/encoder:predict",
                          {"signature_name": "lengths", "instances": [{"b64": "aGVsbG8="}]})
    assert status == 200 and answer["predictions"] == [5]


def test_overflowing_dimensions_are_an_invalid_argument(server):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in (2**62, 2**62, 28, 1)]))
    code, details = predict(server.grpc_port, {"images": proto})
    assert code == "INVALID_ARGUMENT" and "elements" in details, details


def test_a_version_that_fails_to_load_reports_why_with_its_code(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "broken"
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    (status,) = response.model_version_status
    assert status.state == get_model_status_pb2.ModelVersionStatus.State.END
    assert status.status.error_code == grpc.StatusCode.DATA_LOSS.value[0], status
    assert "saved_model.pb" in status.status.error_message


# --- item 7: reload over the network ---

def reload_request(base_path):
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = "encoder", str(base_path), "tensorflow"
    return model_management_pb2.ReloadConfigRequest(config=config)


def call_reload(port, request):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)
            return "OK", ""
        except grpc.RpcError as error:
            return error.code().name, error.details()


def test_reload_over_the_network_is_off_unless_enabled_and_then_confined_to_a_root(server, base, tmp_path):
    code, details = call_reload(server.grpc_port, reload_request(base / "encoder"))
    assert code == "PERMISSION_DENIED" and "--enable_reload_config_request" in details
    assert predict(server.grpc_port, {"images": images(1)})[0] == "OK"  # nothing was unloaded

    outside = tmp_path / "outside"
    write_test_model(outside, 1)
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, poll_wait_seconds=0,
                     enable_reload_config_request=True, model_base_path_root=str(base)) as enabled:
        code, details = call_reload(enabled.grpc_port, reload_request(outside))
        assert code == "PERMISSION_DENIED" and "--model_base_path_root" in details
        assert predict(enabled.grpc_port, {"images": images(1)})[0] == "OK"
        assert call_reload(enabled.grpc_port, reload_request(base / "encoder")) == ("OK", "")
    with pytest.raises(ValueError, match="--model_base_path_root"):
        ModelServer([ModelConfig("encoder", str(base / "encoder"))], enable_reload_config_request=True)


# --- item 6: the UNIX socket ---

@pytest.mark.skipif(__import__("shutil").which("openssl") is None, reason="no openssl command to make a certificate")
def test_unix_socket_gets_the_tls_credentials_and_is_owner_only(base, tmp_path):
    from tests.test_serving_cli import self_signed_certificate

    from mssl_tf.serving.config import TlsConfig

    key, certificate = self_signed_certificate(tmp_path)
    path = tmp_path / "grpc.sock"
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, poll_wait_seconds=0,
                     tls=TlsConfig(key, certificate), grpc_socket_path=str(path)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "encoder"
        with grpc.insecure_channel(f"unix:{path}") as plain:
            with pytest.raises(grpc.RpcError) as caught:
                model_service_pb2_grpc.ModelServiceStub(plain).GetModelStatus(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        credentials = grpc.ssl_channel_credentials(certificate.encode())
        with grpc.secure_channel(f"unix:{path}", credentials,
                                 options=[("grpc.ssl_target_name_override", "localhost")]) as secure:
            response = model_service_pb2_grpc.ModelServiceStub(secure).GetModelStatus(request, timeout=10)
            assert response.model_version_status[0].version == 1


# --- item 4: memory ---

def test_the_memory_budget_is_shared_by_concurrent_requests(base):
    limits = Limits(memory_budget_bytes=64 << 20)
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, rest_api_port=0, poll_wait_seconds=0,
                     limits=limits) as small:
        document = json.dumps({"inputs": images(1).tolist()}).encode()
        body = document + b" " * ((1 << 20) - len(document))  # 1 MiB: 40 MiB reserved to parse it
        with socket.create_connection(("127.0.0.1", small.rest_port), timeout=20) as slow:
            slow.sendall(b"POST /v1/models/encoder:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body[:1000])
            deadline = time.monotonic() + 20
            while small.budget.in_use == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            code, details = predict(small.grpc_port, {"images": images(100)})  # about 40 MiB to run
            assert code == "RESOURCE_EXHAUSTED" and "retry later" in details, details
            status, answer = post(small.rest_port, "/v1/models/encoder:predict", {"inputs": images(100).tolist()})
            assert status == 429 and "memory" in answer["error"]
            slow.sendall(body[1000:])
            answer = slow.makefile("rb").readline()
            assert answer.startswith(b"HTTP/1.1 200"), answer
        assert predict(small.grpc_port, {"images": images(100)})[0] == "OK"
        code, details = predict(small.grpc_port, {**FEW_SHOT, "query_images": images(400),
                                                  "support_labels": np.array([0, 1], np.int32)}, signature="few_shot")
        assert code == "RESOURCE_EXHAUSTED" and "smaller batches" in details, details
        assert small.budget.in_use == 0


def test_a_large_batch_runs_in_pieces_and_answers_every_row(base):
    limits = Limits(max_rows_per_run=64)
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, poll_wait_seconds=0,
                     limits=limits) as split:
        batch = images(300, seed=4)
        code, response = predict(split.grpc_port, {"images": batch})
        assert code == "OK"
        from mssl_tf.serving.tensors import to_ndarray
        from mssl_tf.serving.testing import reference_embeddings

        np.testing.assert_allclose(to_ndarray(response.outputs["embeddings"]), reference_embeddings(batch, 1),
                                   atol=1e-5)


# --- item 5: deadlines ---

def test_rest_work_still_queued_at_its_deadline_is_not_run(base):
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, rest_api_port=0, poll_wait_seconds=0,
                     rest_api_num_threads=1, rest_api_timeout_seconds=1.5) as busy:
        first = {}
        request = {"signature_name": "busy", "instances": images(1).tolist()}
        thread = threading.Thread(target=lambda: first.update(answer=post(busy.rest_port,
                                                                          "/v1/models/encoder:predict", request)))
        thread.start()
        time.sleep(1.0)  # the first request is running (4 s); the second waits for the only worker past 1.5 s
        status, answer = post(busy.rest_port, "/v1/models/encoder:predict", request)
        thread.join(30)
        assert first["answer"][0] == 200
        assert status == 504 and "Deadline exceeded" in answer["error"], answer


def test_grpc_work_still_queued_at_its_deadline_is_not_run(base):
    batching = BatchingOptions(max_batch_size=1, num_batch_threads=1)
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, poll_wait_seconds=0,
                     batching=batching) as batched:
        scheduler = batched.manager.resolve("encoder").schedulers["busy"]
        first = {}
        thread = threading.Thread(target=lambda: first.update(
            answer=predict(batched.grpc_port, {"images": images(1)}, signature="busy", timeout=30)))
        thread.start()
        time.sleep(1.0)  # the first request is running (4 s) in the only batch thread
        code, _ = predict(batched.grpc_port, {"images": images(1)}, signature="busy", timeout=1.0)
        assert code == "DEADLINE_EXCEEDED"
        thread.join(30)
        assert first["answer"][0] == "OK"
        time.sleep(0.5)
        assert (scheduler.tasks_run, scheduler.tasks_expired) == (1, 1)


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's peak RSS from /proc")
def test_a_declared_batch_without_values_runs_in_pieces_within_bounded_memory(tmp_path):
    """A few bytes declaring [6000, 28, 28, 1] uint8 with no values. Conv-4 on all of it at once raised the
    server's peak RSS by 963 MiB already for 4000 rows (previous code); split into runs of 256 rows it grew by
    163 MiB for 6000. few_shot cannot be split: its estimate is over the 1 GiB budget, so it is refused."""
    import subprocess
    import sys

    import mssl_tf
    from mssl_tf.export import export_model
    from tests.test_serving_cli import free_port

    export_model(mssl_tf.conv4(), tmp_path, "conv4", 1, warmup=False)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mssl_tf.cli", "serve", f"--port={port}", "--model_name=conv4",
         f"--model_base_path={tmp_path / 'conv4'}", "--request_memory_budget_bytes=1073741824", "--log_level=WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while predict(port, {"images": images(2)}, model="conv4", timeout=2)[0] != "OK":
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.3)
        before = peak_rss_bytes(process.pid)
        declared = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in (6000, 28, 28, 1)]))
        code, response = predict(port, {"images": declared}, model="conv4", timeout=120)
        assert code == "OK" and response.outputs["embeddings"].tensor_shape.dim[0].size == 6000
        growth = peak_rss_bytes(process.pid) - before
        assert growth < 600 << 20, f"peak RSS grew by {growth >> 20} MiB"
        code, details = predict(port, {"support_images": images(2), "support_labels": np.array([0, 1], np.int32),
                                       "query_images": declared}, signature="few_shot", model="conv4")
        assert code == "RESOURCE_EXHAUSTED" and "smaller batches" in details, details
    finally:
        process.terminate()
        process.communicate(timeout=60)
