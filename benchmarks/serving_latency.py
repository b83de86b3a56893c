"""Serving latency and throughput of `mssl-tf serve`, against the same model in-process, in one run.

    python benchmarks/serving_latency.py [--base-path export/NAME --model-name NAME] [--seconds 4]
                                         [--output benchmarks/results/serving_latency.json]

Without `--base-path`, a freshly initialized Conv-4 encoder (`mssl_tf.conv4()`) is exported with
`mssl_tf.export.export_model` to a temporary directory (the compute is the same as a trained one's).

The server runs as a subprocess started with the command a user types (`mssl-tf serve --port=... --rest_api_port=...
--model_name=... --model_base_path=...`, batching off). One client sends the same uint8 images again and again,
batch 1 and batch 64, for `--seconds` per case, spread over `--rounds` passes over all cases (so that load from
elsewhere on the machine falls on every case alike), each pass after a few warm-up calls:
- gRPC: `EmbeddingClient.embed` (PredictionService/Predict, `serving_default`);
- REST: `RestClient.embed` (`POST /v1/models/<name>:predict`, columnar `{"inputs": ...}` JSON);
- in-process: the SavedModel's `serving_default` signature called directly, and Keras `model.predict` on the
  encoder (float images; its per-call overhead is Keras', not the model's).
Reported per case: p50 and p99 latency (ms) and embeddings per second (batch / mean latency, one client), with
the machine's load average: on a shared machine, other processes' load falls harder on the two-process cases
(each request waits for the client and the server to be scheduled in turn) than on the in-process ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mssl_tf.results import current_commit  # noqa: E402
from mssl_tf.serving import EmbeddingClient, RestClient, ServingError  # noqa: E402

BATCHES = (1, 64)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timings(call, seconds: float, warmup: int = 3) -> list[float]:
    """Seconds per call of `call()`, called one after another for about `seconds` after `warmup` calls."""
    for _ in range(warmup):
        call()
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 5:
        begin = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - begin)
    return latencies


def summary(latencies: list[float], batch: int) -> dict:
    latencies = np.array(latencies)
    return {
        "batch": batch,
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 3),
        "embeddings_per_second": round(batch / float(latencies.mean()), 1),
    }


def export_fresh_encoder(directory: Path) -> tuple[Path, str, object]:
    import mssl_tf
    from mssl_tf.export import export_model

    encoder = mssl_tf.conv4()
    name = "conv4-untrained"
    export_model(encoder, directory, name, 1)
    return directory / name, name, encoder


def wait_until_available(address: str, model_name: str, process, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            with EmbeddingClient(address, model_name, timeout=2) as probe:
                if any(entry["state"] == "AVAILABLE" for entry in probe.status()):
                    return
        except ServingError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{model_name} was not available within {seconds} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-path", default=None, help="a model's base path (numeric version directories)")
    parser.add_argument("--model-name", default=None, help="its served name (default: the directory name)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per case, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="passes over all cases")
    parser.add_argument("--output", default="benchmarks/results/serving_latency.json")
    args = parser.parse_args(argv)

    temporary = tempfile.TemporaryDirectory(prefix="serving-latency-")
    keras_encoder = None
    if args.base_path:
        base_path = Path(args.base_path).resolve()
        model_name = args.model_name or base_path.name
        source = f"{base_path} (given)"
    else:
        base_path, model_name, keras_encoder = export_fresh_encoder(Path(temporary.name))
        source = "a freshly initialized mssl_tf.conv4() encoder exported with mssl_tf.export.export_model"
    version_dir = max((path for path in base_path.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))
    if keras_encoder is None and (version_dir / "assets.extra" / "model.keras").is_file():
        from mssl_tf.finetune import load_exported

        keras_encoder = load_exported(version_dir, "keras")

    load_at_start = os.getloadavg()
    grpc_port, rest_port = free_port(), free_port()
    serve = [sys.executable, "-m", "mssl_tf.cli", "serve", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             f"--model_name={model_name}", f"--model_base_path={base_path}", "--log_level=WARNING"]
    rng = np.random.default_rng(0)
    images = {batch: rng.integers(0, 256, (batch, 28, 28, 1)).astype(np.uint8) for batch in BATCHES}
    results = {"in_process_signature": [], "in_process_keras_predict": [], "grpc": [], "rest": []}

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    process = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = f"127.0.0.1:{grpc_port}"
        wait_until_available(address, model_name, process)
        grpc_client = EmbeddingClient(address, model_name)
        rest_client = RestClient(f"http://127.0.0.1:{rest_port}", model_name)
        calls = {}
        for batch in BATCHES:
            expected = signature(images=tf.constant(images[batch]))["embeddings"].numpy()
            np.testing.assert_allclose(grpc_client.embed(images[batch]), expected, atol=1e-5)
            np.testing.assert_allclose(rest_client.embed(images[batch]), expected, atol=1e-5)
            tensor, floats = tf.constant(images[batch]), images[batch].astype(np.float32) / 255.0
            calls[("in_process_signature", batch)] = (
                lambda tensor=tensor: signature(images=tensor)["embeddings"].numpy())
            if keras_encoder is not None:
                calls[("in_process_keras_predict", batch)] = (
                    lambda floats=floats, batch=batch: keras_encoder.predict(floats, batch_size=batch, verbose=0))
            calls[("grpc", batch)] = lambda batch=batch: grpc_client.embed(images[batch])
            calls[("rest", batch)] = lambda batch=batch: rest_client.embed(images[batch])
        # Rounds over all cases, so that load from elsewhere on the machine spreads over every case alike.
        latencies = {case: [] for case in calls}
        for round_index in range(args.rounds):
            for case, call in calls.items():
                latencies[case] += timings(call, args.seconds / args.rounds)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
        grpc_client.close()
        rest_client.close()
    finally:
        process.terminate()
        process.communicate(timeout=30)
        temporary.cleanup()
    for (kind, batch), values in latencies.items():
        results[kind].append(summary(values, batch))
        print(f"{kind} batch {batch}: {results[kind][-1]}", flush=True)

    def throughput(kind, batch):
        return next(case["embeddings_per_second"] for case in results[kind] if case["batch"] == batch)

    ratios = {
        f"{kind}_batch{batch}_throughput_over_in_process_signature":
            round(throughput(kind, batch) / throughput("in_process_signature", batch), 3)
        for kind in ("grpc", "rest") for batch in BATCHES
    }
    if results["in_process_keras_predict"]:
        ratios.update({
            f"grpc_batch{batch}_throughput_over_keras_predict":
                round(throughput("grpc", batch) / throughput("in_process_keras_predict", batch), 3)
            for batch in BATCHES
        })
    record = {
        "command": "python benchmarks/serving_latency.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "server_command": " ".join(shlex.quote(part) for part in ["mssl-tf", *serve[3:]]),
        "model": source,
        "signature": "serving_default (uint8 [batch, 28, 28, 1] -> float32 [batch, 64])",
        "clients": "one client, requests one after another; REST in the columnar format",
        "seconds_per_case": args.seconds,
        "rounds": args.rounds,
        "results": results,
        "ratios": ratios,
        "goal": "gRPC batch-64 throughput >= 0.8 x in-process",
        "commit": current_commit(Path(__file__).parent),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU (server and client share them)",
        "load_average_1_5_15_min": {"start": [round(value, 2) for value in load_at_start],
                                    "end": [round(value, 2) for value in os.getloadavg()]},
        "tensorflow": tf.__version__,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
