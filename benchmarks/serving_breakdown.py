"""Where a served request's time goes: each stage of gRPC and REST requests against the signature call, in one run.

    python benchmarks/serving_breakdown.py [--base-path export/NAME --model-name NAME] [--rounds 5]
                                           [--profile-seconds 10] [--output benchmarks/results/serving_breakdown.json]

Without `--base-path`, a freshly initialized Conv-4 encoder is exported (as in `serving_latency.py`). For batch 1
and batch 64 of uint8 [28, 28, 1] images (`serving_default`), every stage below is timed in the same process,
the stages taking turns in `--rounds` rounds so that load from elsewhere on the machine falls on all of them alike;
each stage's figure is the median over rounds of (its time per call / the signature call's in that round):

- `signature_call`: the SavedModel's signature on a ready tensor (what `serving_latency.py` compares with);
- `servable_run`: the server's call (numpy → tensor, the signature, tensor → numpy); `servable_predict`: the same
  with the checks against the signature and memory admission; `batching_idle_queue`: through a `BatchScheduler`
  whose queue is empty (the thread hand-offs of `--enable_batching`);
- gRPC: the client's request (conversion and serialization), the server's parse and `to_ndarray`, the server's
  handler without the transport (`api.predict`), the response's construction and serialization, the client's parse;
- REST: the client's JSON encoding, the server's parse (the general path: depth check, `json.loads`, `np.asarray`;
  and the fast path of `json_arrays.loads`), the handler without HTTP (`RestApi.handle`), the response's JSON, the
  client's decoding;
- the round trips to a `mssl-tf serve` subprocess (batching off), and what is left of them after the stages
  (transport: sockets, HTTP or HTTP/2 framing, thread hand-offs, the two processes taking turns on the cores).

Then cProfile, on a server in this process (its request threads) under one client in a subprocess for
`--profile-seconds` per case: the share of the handlers' time in each function that converts or runs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from serving_latency import export_fresh_encoder, free_port, wait_until_available  # noqa: E402

from mssl_tf.results import current_commit  # noqa: E402
from mssl_tf.serving import EmbeddingClient, RestClient  # noqa: E402
from mssl_tf.serving import api, json_arrays  # noqa: E402
from mssl_tf.serving.admission import MemoryBudget  # noqa: E402
from mssl_tf.serving.batching import BatchScheduler  # noqa: E402
from mssl_tf.serving.config import BatchingOptions, ModelConfig  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.models import ModelManager  # noqa: E402
from mssl_tf.serving.rest import RestApi  # noqa: E402
from mssl_tf.serving.rest_server import RestServer  # noqa: E402
from mssl_tf.serving.tensors import dumps_json, to_ndarray, to_tensor_proto  # noqa: E402

from tensorflow_serving.apis import predict_pb2  # noqa: E402

BATCHES = (1, 64)
PROFILED = {  # (file, function) in cProfile's stats → stage
    ("serving/tensors.py", "to_ndarray"): "proto → numpy", ("serving/tensors.py", "to_tensor_proto"): "numpy → proto",
    ("serving/models.py", "_run"): "model run (tensor in, numpy out)",
    ("serving/models.py", "predict"): "Servable.predict (checks, admission, run)",
    ("serving/json_arrays.py", "loads"): "JSON parse", ("json/__init__.py", "loads"): "JSON parse",
    ("serving/rest.py", "_to_array"): "JSON value → numpy", ("serving/limits.py", "check_json_depth"): "JSON depth check",
}


def per_call(call, seconds: float) -> float:
    """Seconds per call, calling for about `seconds` (at least 3 calls) after one warm-up call."""
    call()
    count, start = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < seconds:
        call()
        count += 1
    return (time.perf_counter() - start) / count


def stages(servable, manager, batch: int, images: np.ndarray) -> dict:
    signature = servable.functions["serving_default"]
    tensor = tf.constant(images)
    limits = Limits()
    rest_api = RestApi(manager, limits)
    scheduler = BatchScheduler(lambda inputs: servable._call("serving_default", inputs), "images",
                               BatchingOptions(max_batch_size=64, batch_timeout_micros=0, num_batch_threads=1),
                               name="breakdown")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = manager.model_names()[0]
    request.inputs["images"].CopyFrom(to_tensor_proto(images))
    request_bytes = request.SerializeToString()
    response = api.predict(manager, limits, request)
    response_bytes = response.SerializeToString()
    embeddings = to_ndarray(response.outputs["embeddings"])
    document = {"signature_name": "serving_default", "inputs": images}
    body = dumps_json(document).encode()
    answer = dumps_json({"outputs": embeddings}).encode()

    def grpc_client_request():
        built = predict_pb2.PredictRequest()
        built.model_spec.name = "m"
        built.inputs["images"].CopyFrom(to_tensor_proto(images))
        return built.SerializeToString()

    def grpc_server_response():
        built = predict_pb2.PredictResponse()
        built.outputs["embeddings"].CopyFrom(to_tensor_proto(embeddings))
        return built.SerializeToString()

    def rest_parse_general():
        limits.check_json_depth(body)
        return np.asarray(json.loads(body)["inputs"]).astype(np.uint8)

    def rest_parse_fast():
        parsed = json_arrays.loads(body, limits.max_json_depth)
        return (parsed["inputs"].array if parsed is not None else np.asarray(json.loads(body)["inputs"])).astype(
            np.uint8)

    calls = {
        "signature_call": lambda: signature(images=tensor)["embeddings"].numpy(),
        "servable_run": lambda: servable._run("serving_default", {"images": images}),
        "servable_predict": lambda: servable.predict("serving_default", {"images": images}),
        "batching_idle_queue": lambda: scheduler.submit({"images": images}),
        "grpc_client_request": grpc_client_request,
        "grpc_server_parse": lambda: to_ndarray(predict_pb2.PredictRequest.FromString(request_bytes).inputs["images"]),
        "grpc_handler_without_transport": lambda: api.predict(
            manager, limits, predict_pb2.PredictRequest.FromString(request_bytes)),
        "grpc_server_response": grpc_server_response,
        "grpc_client_parse": lambda: to_ndarray(predict_pb2.PredictResponse.FromString(response_bytes).outputs[
            "embeddings"]),
        "rest_client_encode": lambda: dumps_json(document).encode(),
        "rest_server_parse_general": rest_parse_general,
        "rest_server_parse_fast": rest_parse_fast,
        "rest_handler_without_http": lambda: rest_api.handle("POST", f"/v1/models/{request.model_spec.name}:predict",
                                                              body),
        "rest_response_encode": lambda: dumps_json({"outputs": embeddings}).encode(),
        "rest_client_decode": lambda: np.asarray(json.loads(answer)["outputs"], np.float32),
    }
    return calls, scheduler, {"rest_body_bytes": len(body), "grpc_request_bytes": len(request_bytes)}


def profile_server(manager, model_name: str, seconds: float) -> dict:
    """cProfile of the request threads of a server in this process, one client (a subprocess) per case."""
    from mssl_tf.serving import grpc_server, rest

    profiles, lock = [], threading.Lock()

    def profiled(function):
        def call(*args, **kwargs):
            profile = cProfile.Profile()
            profile.enable()
            try:
                return function(*args, **kwargs)
            finally:
                profile.disable()
                with lock:
                    profiles.append(profile)
        return call

    original_predict, original_handle = grpc_server.PredictionServicer.Predict, rest.RestApi.handle
    grpc_server.PredictionServicer.Predict = profiled(original_predict)
    rest.RestApi.handle = profiled(original_handle)
    results = {}
    try:
        grpc_handle, grpc_port = grpc_server.start_grpc_server(manager, "127.0.0.1", 0, Limits())
        rest_server = RestServer(("127.0.0.1", 0), RestApi(manager, Limits())).start()
        for kind, batch in (("grpc", 1), ("grpc", 64), ("rest", 64)):
            profiles.clear()
            client = (f"import numpy as np, time; from mssl_tf.serving import EmbeddingClient, RestClient\n"
                      f"images = np.random.default_rng(0).integers(0, 256, ({batch}, 28, 28, 1)).astype(np.uint8)\n"
                      f"client = EmbeddingClient('127.0.0.1:{grpc_port}', '{model_name}') if '{kind}' == 'grpc' "
                      f"else RestClient('http://127.0.0.1:{rest_server.server_port}', '{model_name}')\n"
                      f"client.embed(images); start = time.monotonic()\n"
                      f"while time.monotonic() - start < {seconds}: client.embed(images)\n")
            subprocess.run([sys.executable, "-c", client], check=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
            stats = pstats.Stats(profiles[0])
            for profile in profiles[1:]:
                stats.add(profile)
            total = sum(timing[3] for (filename, _, function), timing in stats.stats.items()
                        if function in ("Predict", "handle") and "mssl_tf/serving" in filename)
            shares = {}
            for (filename, _, function), timing in stats.stats.items():
                for (suffix, name), stage in PROFILED.items():
                    if function == name and filename.endswith(suffix):
                        shares[stage] = shares.get(stage, 0.0) + timing[3]
            results[f"{kind}_batch{batch}"] = {
                "requests": len(profiles),
                "handler_ms_per_request": round(total / max(len(profiles), 1) * 1e3, 3),
                "share_of_handler_time": {name: round(value / total, 3) for name, value in sorted(shares.items())},
            }
        rest_server.stop()
        grpc_handle.stop(0)
    finally:
        grpc_server.PredictionServicer.Predict, rest.RestApi.handle = original_predict, original_handle
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-path", default=None)
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="per stage per round")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--output", default="benchmarks/results/serving_breakdown.json")
    args = parser.parse_args(argv)

    load_at_start = os.getloadavg()
    temporary = tempfile.TemporaryDirectory(prefix="serving-breakdown-")
    if args.base_path:
        base_path = Path(args.base_path).resolve()
        model_name = args.model_name or base_path.name
    else:
        base_path, model_name, _ = export_fresh_encoder(Path(temporary.name))
    manager = ModelManager([ModelConfig(model_name, str(base_path))], poll_wait_seconds=0,
                           budget=MemoryBudget(Limits().memory_budget_bytes))
    manager.start()
    gc.freeze()  # as ModelServer.start does
    servable = manager.resolve(model_name)
    rng = np.random.default_rng(0)
    images = {batch: rng.integers(0, 256, (batch, 28, 28, 1)).astype(np.uint8) for batch in BATCHES}

    grpc_port, rest_port = free_port(), free_port()
    serve = [sys.executable, "-m", "mssl_tf.cli", "serve", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             f"--model_name={model_name}", f"--model_base_path={base_path}", "--log_level=WARNING"]
    process = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results, sizes, schedulers = {}, {}, []
    try:
        wait_until_available(f"127.0.0.1:{grpc_port}", model_name, process, seconds=900)
        grpc_client = EmbeddingClient(f"127.0.0.1:{grpc_port}", model_name)
        rest_client = RestClient(f"http://127.0.0.1:{rest_port}", model_name)
        calls = {}
        for batch in BATCHES:
            batch_calls, scheduler, sizes[batch] = stages(servable, manager, batch, images[batch])
            schedulers.append(scheduler)
            batch_calls["grpc_round_trip"] = lambda batch=batch: grpc_client.embed(images[batch])
            batch_calls["rest_round_trip"] = lambda batch=batch: rest_client.embed(images[batch])
            calls.update({(batch, name): call for name, call in batch_calls.items()})
        seconds = {case: [] for case in calls}
        for round_index in range(args.rounds):
            for case, call in calls.items():
                seconds[case].append(per_call(call, args.seconds))
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
        grpc_client.close()
        rest_client.close()
    finally:
        process.terminate()
        process.communicate(timeout=30)
        for scheduler in schedulers:
            scheduler.close()
    for batch in BATCHES:
        reference = np.array(seconds[(batch, "signature_call")])
        rows = {}
        for (case_batch, name), values in seconds.items():
            if case_batch == batch:
                rows[name] = {"ms_median": round(float(np.median(values)) * 1e3, 3),
                              "over_signature_call": round(float(np.median(np.array(values) / reference)), 3)}
        ratio = {name: row["over_signature_call"] for name, row in rows.items()}
        rows["grpc_transport_left"] = {"over_signature_call": round(
            ratio["grpc_round_trip"] - ratio["grpc_client_request"] - ratio["grpc_handler_without_transport"]
            - ratio["grpc_client_parse"], 3)}
        rows["rest_transport_left"] = {"over_signature_call": round(
            ratio["rest_round_trip"] - ratio["rest_client_encode"] - ratio["rest_handler_without_http"]
            - ratio["rest_client_decode"], 3)}
        results[f"batch{batch}"] = {"sizes": sizes[batch], "stages": rows}
        print(json.dumps(results[f"batch{batch}"], indent=1), flush=True)
    profile = profile_server(manager, model_name, args.profile_seconds) if args.profile_seconds > 0 else {}
    manager.stop()
    temporary.cleanup()
    record = {
        "command": "python benchmarks/serving_breakdown.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "server_command": " ".join(shlex.quote(part) for part in ["mssl-tf", *serve[3:]]),
        "signature": "serving_default (uint8 [batch, 28, 28, 1] -> float32 [batch, 64]), Conv-4",
        "how": "per stage: median over rounds of (seconds per call / the signature call's in the same round); "
               "*_transport_left = round trip - client stages - server handler",
        "rounds": args.rounds,
        "seconds_per_stage_per_round": args.seconds,
        "results": results,
        "server_profile": {"how": f"cProfile of the request threads of an in-process server, one client "
                                  f"subprocess, {args.profile_seconds:g} s per case; shares are cumulative times "
                                  f"(nested stages overlap)", **profile},
        "commit": current_commit(Path(__file__).parent),
        "load_average_1_5_15_min": {"start": [round(value, 2) for value in load_at_start],
                                    "end": [round(value, 2) for value in os.getloadavg()]},
        "cpu_cores": os.cpu_count(),
        "tensorflow": tf.__version__,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
