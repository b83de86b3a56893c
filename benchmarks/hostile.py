"""The hostile table: `mssl-tf serve` under bad inputs, slow and idle clients, oversize and amplifying requests,
deadlines, a version swap under load and a corrupt version, with clients this project did not write.

    python benchmarks/hostile.py [--output benchmarks/results/hostile.json] [--scale 1.0]

A freshly initialized Conv-4 encoder (`mssl_tf.conv4()`) is exported with `mssl_tf.export.export_model` to a
temporary base path and served by a subprocess started as a user would (`mssl-tf serve --port=... --rest_api_port=...
--model_name=... --model_base_path=... --file_system_poll_wait_seconds=1`, defaults otherwise). Clients are TF
Serving's gRPC stubs (tensorflow-serving-api), `http.client` and raw sockets, all on 127.0.0.1. Every scenario is
bounded in count and time (`--scale` multiplies the counts). Per scenario the record holds the requests sent, the
ones whose answer was not the expected one ("failed"), the answers by code, latency p50/p99 of the answered
requests, and the server's RSS (and peak RSS, VmHWM) before and after, read from /proc.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import platform
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
)

from mssl_tf.results import current_commit  # noqa: E402

MODEL = "conv4"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory(pid: int) -> dict:
    """The process's resident and peak resident memory in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}


def tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    import tensorflow as tf

    return tf.make_tensor_proto(array)


def declared(shape, dtype=types_pb2.DT_UINT8) -> tensor_pb2.TensorProto:
    """A tensor that declares `shape` and carries no values (TensorFlow fills it with zeros)."""
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]))


def png_bomb(side: int) -> bytes:
    """A valid blank grayscale PNG of side x side pixels, a few hundred KB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\x00" * (side + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


class Tally:
    """Answers of one scenario: codes, unexpected answers, latencies."""

    def __init__(self):
        self.codes = collections.Counter()
        self.failed = 0
        self.latencies = []
        self.lock = threading.Lock()

    def add(self, code: str, expected, seconds: float) -> None:
        with self.lock:
            self.codes[code] += 1
            self.latencies.append(seconds)
            if code not in (expected if isinstance(expected, tuple) else (expected,)):
                self.failed += 1

    def summary(self) -> dict:
        latencies = np.array(self.latencies or [0.0]) * 1e3
        return {"sent": sum(self.codes.values()), "failed": self.failed, "codes": dict(sorted(self.codes.items())),
                "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                "p99_ms": round(float(np.percentile(latencies, 99)), 2)}


class Target:
    """The server under test: its ports and process."""

    def __init__(self, grpc_port: int, rest_port: int, process):
        self.grpc_port, self.rest_port, self.process = grpc_port, rest_port, process
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}",
                                             options=[("grpc.max_send_message_length", 256 << 20)])
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, inputs: dict, signature: str = "", timeout: float = 60.0) -> str:
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = MODEL, signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto) else tensor(value))
        try:
            self.predictions.Predict(request, timeout=timeout)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    def rest(self, method: str, path: str, body: bytes | None = None, timeout: float = 60.0) -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=timeout)
        try:
            connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
            response = connection.getresponse()
            response.read()
            return str(response.status)
        except (OSError, http.client.HTTPException) as error:
            return type(error).__name__
        finally:
            connection.close()

    def raw(self, data: bytes, timeout: float = 20.0) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.rest_port), timeout=timeout) as connection:
                connection.sendall(data)
                line = connection.makefile("rb").readline()
            return line.split()[1].decode() if line.startswith(b"HTTP/") else "no answer"
        except OSError as error:
            return type(error).__name__


def timed(tally: Tally, expected, call) -> None:
    start = time.perf_counter()
    code = call()
    tally.add(code, expected, time.perf_counter() - start)


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28, 1)).astype(np.uint8)


def rows_body(batch: np.ndarray) -> bytes:
    return json.dumps({"instances": batch.tolist()}).encode()


def scenario_bad_inputs(target: Target, repeat: int) -> Tally:
    tally = Tally()
    few = {"support_images": images(2), "query_images": images(1)}
    cases = [
        (lambda: target.predict({"images": images(2).astype(np.float32)}), "INVALID_ARGUMENT"),
        (lambda: target.predict({"images": images(2)[:, :20]}), "INVALID_ARGUMENT"),
        (lambda: target.predict({"pictures": images(2)}), "INVALID_ARGUMENT"),
        (lambda: target.predict({"images": declared((2**62, 2**62, 28, 1))}), "INVALID_ARGUMENT"),
        (lambda: target.predict({**few, "support_labels": np.array([0, 2**31 - 2], np.int32)}, "few_shot"),
         "INVALID_ARGUMENT"),
        (lambda: target.predict({**few, "support_labels": np.array([0, 2], np.int32)}, "few_shot"),
         "INVALID_ARGUMENT"),
        (lambda: target.predict({"png": np.array([b"not an image"], dtype=object)}, "embed_png"), "INVALID_ARGUMENT"),
        (lambda: target.rest("POST", f"/v1/models/{MODEL}:predict",
                             json.dumps({"signature_name": "embed_png", "instances": [{"b64": "%%%"}]}).encode()),
         "400"),
        (lambda: target.rest("POST", f"/v1/models/{MODEL}:predict", b"{not json"), "400"),
        (lambda: target.rest("BREW", f"/v1/models/{MODEL}"), "400"),
        (lambda: target.raw(b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: 2\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), "400"),
        (lambda: target.raw(b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"),
         "400"),
        (lambda: target.raw(b"GET /v1/models/x\r\n\r\n"), "400"),
        (lambda: target.raw(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"), "400"),
        (lambda: target.predict({"images": images(2)}, timeout=0.0005), "DEADLINE_EXCEEDED"),
    ]
    for _ in range(repeat):
        for call, expected in cases:
            timed(tally, expected, call)
    return tally


def scenario_slow_and_idle(target: Target, idle_count: int, slow_count: int, requests: int) -> Tally:
    """Normal REST and gRPC requests while `idle_count` idle and `slow_count` one-byte-a-second sockets are open."""
    tally = Tally()
    idle = [socket.create_connection(("127.0.0.1", target.rest_port), timeout=30) for _ in range(idle_count)]
    stop = threading.Event()

    def slowloris():
        with socket.create_connection(("127.0.0.1", target.rest_port), timeout=30) as connection:
            try:
                for byte in b"GET /v1/models/conv4 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                    if stop.is_set():
                        return
                    connection.sendall(bytes([byte]))
                    time.sleep(1.0)
            except OSError:
                return

    slow = [threading.Thread(target=slowloris, daemon=True) for _ in range(slow_count)]
    for thread in slow:
        thread.start()
    keep_alive = [http.client.HTTPConnection("127.0.0.1", target.rest_port, timeout=30) for _ in range(16)]
    body = rows_body(images(8))
    try:
        time.sleep(1.0)
        for index in range(requests):
            connection = keep_alive[index % len(keep_alive)]

            def call(connection=connection):
                try:
                    connection.request("POST", f"/v1/models/{MODEL}:predict", body)
                    response = connection.getresponse()
                    response.read()
                    return str(response.status)
                except (OSError, http.client.HTTPException) as error:
                    connection.close()
                    return type(error).__name__

            timed(tally, "200", call)
            timed(tally, "OK", lambda: target.predict({"images": images(8)}))
    finally:
        stop.set()
        for connection in idle + keep_alive:
            connection.close()
    return tally


def scenario_oversize_and_amplifying(target: Target, repeat: int) -> Tally:
    tally = Tally()
    bomb = png_bomb(12000)
    big_body = json.dumps({"inputs": np.zeros((4000, 28, 28, 1), np.uint8).tolist()}).encode()  # ~15 MiB
    cases = [
        (lambda: target.predict({"images": declared((6000, 28, 28, 1))}, timeout=120), "OK"),  # split into runs
        (lambda: target.predict({"support_images": images(2), "support_labels": np.array([0, 1], np.int32),
                                 "query_images": declared((20000, 28, 28, 1))}, "few_shot"), "RESOURCE_EXHAUSTED"),
        (lambda: target.predict({"png": np.array([bomb], dtype=object)}, "embed_png"), "INVALID_ARGUMENT"),
        (lambda: target.rest("POST", f"/v1/models/{MODEL}:predict", big_body, timeout=120), "200"),
        (lambda: target.raw(b"POST /v1/models/conv4:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                            % (1 << 30)), "413"),
    ]
    for _ in range(repeat):
        for call, expected in cases:
            timed(tally, expected, call)
    return tally


def scenario_concurrent_budget(target: Target, clients: int) -> Tally:
    """`clients` large REST bodies at once: admitted while the memory budget lasts, RESOURCE_EXHAUSTED (429) after;
    an admitted one whose JSON parsing (in Python, several at once sharing the GIL) outlasts
    `--rest_api_timeout_in_ms` answers 504 DEADLINE_EXCEEDED instead of running the model."""
    tally = Tally()
    body = json.dumps({"inputs": np.zeros((8000, 28, 28, 1), np.uint8).tolist()}).encode()  # ~31 MiB: ~1.2 GiB
    threads = [threading.Thread(target=timed, args=(
        tally, ("200", "429", "504"), lambda: target.rest("POST", f"/v1/models/{MODEL}:predict", body, timeout=180)))
        for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def scenario_swap_under_load(target: Target, base_path: Path, seconds: float) -> Tally:
    """Clients keep sending while version 2 is exported into the base path, then a corrupt version 3 appears."""
    import mssl_tf
    from mssl_tf.export import export_model

    tally = Tally()
    stop = threading.Event()

    def sender(kind):
        body = rows_body(images(4))
        while not stop.is_set():
            if kind == "grpc":
                timed(tally, "OK", lambda: target.predict({"images": images(4)}))
            else:
                timed(tally, "200", lambda: target.rest("POST", f"/v1/models/{MODEL}:predict", body))

    threads = [threading.Thread(target=sender, args=(kind,), daemon=True) for kind in ("grpc", "rest", "grpc")]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 3)
    export_model(mssl_tf.conv4(), base_path.parent, base_path.name, 2, warmup=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and versions(target).get(2) != "AVAILABLE":
        time.sleep(0.2)
    corrupt = base_path / "3"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x08\x01 not a SavedModel \xff\xff")
    time.sleep(seconds / 3)
    stop.set()
    for thread in threads:
        thread.join()
    tally.versions_after = {str(key): value for key, value in versions(target, detail=True).items()}
    return tally


def versions(target: Target, detail: bool = False) -> dict:
    """Version → state name (with `detail`: state, error code and message) from GetModelStatus."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    try:
        response = target.models.GetModelStatus(request, timeout=10)
    except grpc.RpcError:
        return {}
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    if not detail:
        return {status.version: state_name(status.state) for status in response.model_version_status}
    return {status.version: {"state": state_name(status.state), "error_code": status.status.error_code,
                             "error_message": status.status.error_message[:160]}
            for status in response.model_version_status}


def run_scenario(name: str, target: Target, call) -> dict:
    if target.process.poll() is not None:
        raise RuntimeError(f"the server exited with {target.process.returncode} before: {name}")
    before = memory(target.process.pid)
    start = time.monotonic()
    tally = call()
    if target.process.poll() is not None:
        raise RuntimeError(f"the server exited with {target.process.returncode} during: {name}")
    record = {"scenario": name, **tally.summary(), "seconds": round(time.monotonic() - start, 1),
              "memory_before": before, "memory_after": memory(target.process.pid)}
    if hasattr(tally, "versions_after"):
        record["versions_after"] = tally.versions_after
    print(json.dumps(record), flush=True)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/results/hostile.json")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the request counts")
    args = parser.parse_args(argv)

    import mssl_tf
    from mssl_tf.export import export_model

    def count(value):
        return max(1, int(value * args.scale))

    temporary = tempfile.TemporaryDirectory(prefix="hostile-")
    base_path = Path(temporary.name) / MODEL
    export_model(mssl_tf.conv4(), temporary.name, MODEL, 1, warmup=True)
    grpc_port, rest_port = free_port(), free_port()
    serve = [sys.executable, "-m", "mssl_tf.cli", "serve", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             f"--model_name={MODEL}", f"--model_base_path={base_path}", "--file_system_poll_wait_seconds=1",
             "--log_level=ERROR"]
    load_at_start = os.getloadavg()
    log_path = Path(temporary.name) / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, text=True)
    records = []
    try:
        target = Target(grpc_port, rest_port, process)
        deadline = time.monotonic() + 120
        while target.predict({"images": images(2)}, timeout=2) != "OK":
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not come up:\n{log_path.read_text()}")
            time.sleep(0.3)
        started = memory(process.pid)
        records.append(run_scenario("bad inputs (15 classes, gRPC and REST, malformed HTTP, 0.5 ms deadline)", target,
                                    lambda: scenario_bad_inputs(target, count(4))))
        records.append(run_scenario("normal requests while 200 idle and 8 slowloris sockets are open", target,
                                    lambda: scenario_slow_and_idle(target, 200, 8, count(60))))
        records.append(run_scenario("oversize and amplifying (declared 6000-image batch, 20000-query few_shot, "
                                    "12000x12000 PNG bomb, 15 MiB REST body, 1 GiB Content-Length)", target,
                                    lambda: scenario_oversize_and_amplifying(target, count(2))))
        records.append(run_scenario("6 concurrent 31 MiB REST bodies against the 4 GiB budget", target,
                                    lambda: scenario_concurrent_budget(target, 6)))
        records.append(run_scenario("swap to a new version under load, then a corrupt version", target,
                                    lambda: scenario_swap_under_load(target, base_path, 15.0)))
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        output = log_path.read_text()
        if process.returncode not in (0, -15):
            print(output[-5000:], file=sys.stderr)
        temporary.cleanup()
    record = {
        "command": "python benchmarks/hostile.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "server_command": " ".join(shlex.quote(part) for part in ["mssl-tf", *serve[3:-1]]),
        "model": "a freshly initialized mssl_tf.conv4() encoder exported with mssl_tf.export.export_model",
        "clients": "tensorflow-serving-api gRPC stubs, http.client, raw sockets; 127.0.0.1",
        "server_memory_at_start": started,
        "scenarios": records,
        "server_exit_code": process.returncode,
        "server_log_tail": output.splitlines()[-5:],
        "commit": current_commit(Path(__file__).parent),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU (server and clients share them)",
        "load_average_1_5_15_min": {"start": [round(value, 2) for value in load_at_start],
                                    "end": [round(value, 2) for value in os.getloadavg()]},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(scenario["failed"] == 0 for scenario in records) else 1


if __name__ == "__main__":
    sys.exit(main())
