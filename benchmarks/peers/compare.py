"""mssl-tf against the PyTorch libraries a user would pick instead, measured side by side in one run (issue 14).

    nice -n 19 bash benchmarks/peers/make_venv.sh          # once: benchmarks/peers/.venv (torch, learn2learn)
    PYTHONPATH=. .venv/bin/python benchmarks/peers/compare.py [--rounds 3] [--warmup 2] [--steps 5]
                                        [--output benchmarks/results/peers.json]
    PYTHONPATH=. .venv/bin/python benchmarks/peers/compare.py --quick   # sanity run, writes runs/peers-quick.json

Every measurement is a fresh subprocess: ours (`ours.py`) with this Python, theirs (`theirs.py`) with the peer
venv's. Within a comparison the entrants run one after another, ours first in even rounds and theirs first in
odd ones, for `--rounds` rounds, so that load from elsewhere falls on both sides alike. In each subprocess the
first step (tracing, compiling, allocator warm-up) is timed apart, `--warmup` steps are not timed, then
`--steps` steps are. Both sides run 2 intra-op and 2 inter-op threads (OMP/MKL/TF variables and the libraries'
own settings). Per entrant the record keeps every timed step, the median step per round, their median over the
rounds, and the first-step times; per comparison the speed-ups (their median seconds / our median seconds: above
1 means ours is faster); then the peak memory (max RSS of the subprocess) of second-order MAML at 1, 5 and 10
inner steps on both sides; the versions, thread settings, CPU model, commit, and load average before and after.

Timings are only worth keeping from an otherwise idle machine: the record holds the load average so a reader
can tell. Inputs are fixed random tensors of the tasks' shapes on both sides (the arithmetic, hence the time,
does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

PEER_PYTHON = HERE / ".venv" / "bin" / "python"
MEMORY_INNER_STEPS = (1, 5, 10)


def comparisons(learn2learn_available: bool) -> list[dict]:
    """The timed comparisons: name, task, units, and entrants as (side, workload, extra worker arguments)."""
    maml_peers = (["maml_learn2learn"] if learn2learn_available else []) + ["maml_torch_func"]
    table = []
    for inner_steps in (1, 5):
        table.append({
            "name": f"maml_second_order_{inner_steps}_inner_steps",
            "task": f"second-order MAML, 5-way 1-shot, 15 queries/class, meta-batch 32, Conv-4, {inner_steps} inner "
                    "step(s), inner rate 0.4, Adam",
            "entrants": [("ours", "maml", ["--inner-steps", str(inner_steps)])]
                        + [("theirs", peer, ["--inner-steps", str(inner_steps)]) for peer in maml_peers],
        })
    table.append({"name": "protonet", "task": "ProtoNet 60-way 5-shot 5-query, Conv-4, 1 task per step, Adam",
                  "entrants": [("ours", "protonet", []), ("ours", "plain_tf_protonet", []),
                               ("theirs", "protonet", [])]})
    table.append({"name": "simclr", "task": "SimCLR step, 256 images in two views (512 through the encoder), Conv-4, "
                                            "projection MLP 64-256-128, NT-Xent tau 0.1, Adam",
                  "entrants": [("ours", "simclr", []), ("theirs", "simclr", [])],
                  "images_per_step": harness.SIMCLR_BATCH})
    return table


def entrant_order(entrants: list[tuple], round_index: int) -> list[tuple]:
    """Ours first in even rounds, theirs first in odd rounds (each side's entrants keep their order)."""
    ours = [entrant for entrant in entrants if entrant[0] == "ours"]
    theirs = [entrant for entrant in entrants if entrant[0] == "theirs"]
    return ours + theirs if round_index % 2 == 0 else theirs + ours


def entrant_label(side: str, workload: str) -> str:
    return f"{side}/{workload}"


def worker_command(side: str, workload: str, extra: list[str], settings: dict, peer_python: Path) -> list[str]:
    python, script = (sys.executable, HERE / "ours.py") if side == "ours" else (str(peer_python), HERE / "theirs.py")
    command = [python, str(script), workload, *extra, "--warmup", str(settings["warmup"]),
               "--steps", str(settings["steps"])]
    return command + (["--quick"] if settings["quick"] else [])


def worker_environment() -> dict:
    environment = {**os.environ, **harness.THREAD_ENVIRONMENT}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return environment


class WorkerFailed(RuntimeError):
    """A worker exited without a result: `returncode` (-9: killed, e.g. by the kernel when memory ran out) and the
    max RSS it reached."""

    def __init__(self, message: str, returncode: int, max_rss_mb: float):
        super().__init__(message)
        self.returncode, self.max_rss_mb = returncode, max_rss_mb


def run_worker(command: list[str]) -> dict:
    """Runs one worker to its end; its result plus the max RSS the kernel counted for it (`wait4`)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=worker_environment(), cwd=REPOSITORY)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    max_rss_mb = round(usage.ru_maxrss / 1024, 1)
    if process.returncode != 0:
        raise WorkerFailed(f"{shlex.join(command)} exited with {process.returncode}:\n{output[-3000:]}",
                           process.returncode, max_rss_mb)
    return {**harness.parse_result(output), "max_rss_mb": max_rss_mb}


# === Summaries (pure: tested on fake timing tables) ===
def summarize_entrant(runs: list[dict]) -> dict:
    """One entrant's runs (one per round) → its timings per round and medians."""
    round_medians = [statistics.median(run["step_seconds"]) for run in runs]
    return {
        "step_seconds_per_round": [[round(value, 4) for value in run["step_seconds"]] for run in runs],
        "median_step_seconds_per_round": [round(value, 4) for value in round_medians],
        "median_step_seconds": round(statistics.median(round_medians), 4),
        "first_step_seconds_per_round": [round(run["first_step_seconds"], 2) for run in runs],
        "median_first_step_seconds": round(statistics.median(run["first_step_seconds"] for run in runs), 2),
        "max_rss_mb_per_round": [run["max_rss_mb"] for run in runs],
    }


def speedups(summaries: dict[str, dict]) -> dict[str, float]:
    """Every `ours/...` entrant against every other entrant: their median seconds per step / ours (> 1: ours faster)."""
    result = {}
    for ours, our_summary in summaries.items():
        if not ours.startswith("ours/"):
            continue
        for other, other_summary in summaries.items():
            if other != ours:
                result[f"{ours} over {other}"] = round(
                    other_summary["median_step_seconds"] / our_summary["median_step_seconds"], 3)
    return result


def summarize_comparison(comparison: dict, runs: dict[str, list[dict]]) -> dict:
    """A comparison's task, per-entrant summaries and speed-ups (and images per second where it has images)."""
    summaries = {label: summarize_entrant(entrant_runs) for label, entrant_runs in runs.items()}
    if "images_per_step" in comparison:
        for summary in summaries.values():
            summary["images_per_second"] = round(comparison["images_per_step"] / summary["median_step_seconds"], 1)
    return {"name": comparison["name"], "task": comparison["task"], "entrants": summaries,
            "speedups": speedups(summaries)}


def summarize_memory(runs: dict[int, dict[str, dict]]) -> list[dict]:
    """Peak memory per inner-step count: each entrant's max RSS, its RSS before the first step, and the difference."""
    return [{"inner_steps": inner_steps,
             **{label: {"max_rss_mb": run["max_rss_mb"], "rss_before_first_step_mb": run["rss_before_first_step_mb"],
                        "step_mb": round(run["max_rss_mb"] - run["rss_before_first_step_mb"], 1)}
                for label, run in entrants.items()}}
            for inner_steps, entrants in sorted(runs.items())]


# === The run ===
def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def contended(load: list[float]) -> bool:
    """Whether the machine was busy when the run started (1-minute load average of 0.5 or more).

    Busy machines bias the ratios, and not evenly: under load a 2-thread torch step slows far more than
    TensorFlow's (probably its OpenMP threads waiting for each other at every parallel region): a 10-way 5-shot
    ProtoNet step took 0.30 s with 1 thread and 6.1 s with 2 threads at nice 19 beside a training run.
    """
    return load[0] >= 0.5


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def learn2learn_status(peer_python: Path) -> str | None:
    """None when the peer venv imports learn2learn, else why not."""
    probe = subprocess.run([str(peer_python), "-c", "import learn2learn"], capture_output=True, text=True)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["import failed"])[-1]


def run(args) -> dict:
    load_before = load_average()  # first: the probes below (torch imports) raise it themselves
    settings = {"warmup": args.warmup, "steps": args.steps, "quick": args.quick}
    peer_python = Path(args.peer_python)
    if not peer_python.exists():
        raise SystemExit(f"no peer Python at {peer_python}: run `nice -n 19 bash benchmarks/peers/make_venv.sh`")
    learn2learn_error = learn2learn_status(peer_python)
    table = [comparison for comparison in comparisons(learn2learn_error is None)
             if not args.only or comparison["name"] in args.only]
    from mssl_tf.results import current_commit

    commit = current_commit(REPOSITORY)  # at the start: the code that ran
    if contended(load_before):
        print(f"warning: load average {load_before} before the run: the timings will not be fit to publish",
              flush=True)
    runs = {comparison["name"]: {} for comparison in table}
    versions, threads = {}, {}
    for round_index in range(args.rounds):
        for comparison in table:
            for side, workload, extra in entrant_order(comparison["entrants"], round_index):
                result = run_worker(worker_command(side, workload, extra, settings, peer_python))
                runs[comparison["name"]].setdefault(entrant_label(side, workload), []).append(result)
                versions[side], threads[side] = result["versions"], result["threads"]
                print(f"round {round_index + 1}/{args.rounds} {comparison['name']} {side}/{workload}: "
                      f"median step {statistics.median(result['step_seconds']):.3f} s, "
                      f"first {result['first_step_seconds']:.1f} s", flush=True)
    memory_runs = {}
    maml_peers = (["maml_learn2learn"] if learn2learn_error is None else []) + ["maml_torch_func"]
    memory_settings = {**settings, "warmup": 0, "steps": 1}
    for inner_steps in args.memory_inner_steps:
        for side, workload in [("ours", "maml"), *(("theirs", peer) for peer in maml_peers)]:
            result = run_worker(worker_command(side, workload, ["--inner-steps", str(inner_steps)], memory_settings,
                                               peer_python))
            memory_runs.setdefault(inner_steps, {})[entrant_label(side, workload)] = result
            print(f"memory {inner_steps} inner steps {side}/{workload}: {result['max_rss_mb']} MB", flush=True)
    return {
        "benchmark": "peers side by side (issue 14)",
        "command": "python benchmarks/peers/compare.py " + shlex.join(args.argv),
        "commit": commit,
        "cpu_model": cpu_model(),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "quick": args.quick,
        "rounds": args.rounds, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "order": "entrants alternate: ours first in even rounds, theirs first in odd rounds; one subprocess each",
        "data": "fixed random tensors of the tasks' shapes, the same on both sides (timing does not depend on "
                "pixel values)",
        "learn2learn": ("learn2learn 0.2.0 built from its sdist (make_venv.sh)" if learn2learn_error is None else
                        f"learn2learn not importable ({learn2learn_error}): second-order MAML written with "
                        "torch.func stands in for it"),
        "threads": {"environment": harness.THREAD_ENVIRONMENT, **threads},
        "versions": versions,
        "openblas_environment": {name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "load_average_1_5_15_min": {"before": load_before, "after": load_average()},
        "contended": contended(load_before),
        "comparisons": [summarize_comparison(comparison, runs[comparison["name"]]) for comparison in table],
        "maml_peak_memory": {
            "what": "max RSS of a subprocess (the kernel's count, wait4) that runs the first step and 1 more; "
                    "step_mb = max RSS - RSS before the first step (libraries loaded, model and inputs built)",
            "by_inner_steps": summarize_memory(memory_runs),
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first, per subprocess")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per subprocess")
    parser.add_argument("--quick", action="store_true", help="sanity run: 2 rounds of 2 steps on smaller shapes "
                                                              "(harness.task_shapes), memory at 1 and 2 inner steps")
    parser.add_argument("--only", nargs="*", help="comparison names to run (default: all)")
    parser.add_argument("--memory-inner-steps", type=lambda text: [int(v) for v in text.split(",")],
                        default=list(MEMORY_INNER_STEPS))
    parser.add_argument("--peer-python", default=str(PEER_PYTHON))
    parser.add_argument("--output", default=None,
                        help="default benchmarks/results/peers.json (runs/peers-quick.json with --quick)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.rounds, args.warmup, args.steps = 2, 1, 2
        if args.memory_inner_steps == list(MEMORY_INNER_STEPS):
            args.memory_inner_steps = [1, 2]
    output = Path(args.output or ("runs/peers-quick.json" if args.quick else "benchmarks/results/peers.json"))
    record = run(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    for comparison in record["comparisons"]:
        print(comparison["name"], json.dumps(comparison["speedups"]))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
