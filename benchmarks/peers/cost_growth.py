"""How the cost of a second-order MAML step grows with the task (issue 14): seconds per meta-iteration against
ways, shots, meta-batch and inner steps, one factor at a time around the issue's task (5-way 1-shot, 15
queries/class, meta-batch 32, 1 inner step, Conv-4), mssl-tf beside learn2learn in the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/peers/cost_growth.py            # results/cost_growth.{json,png}
    PYTHONPATH=. .venv/bin/python benchmarks/peers/cost_growth.py --quick    # sanity run: runs/cost_growth-quick.json
    PYTHONPATH=. .venv/bin/python benchmarks/peers/cost_growth.py --plot-only benchmarks/results/cost_growth.json
    PYTHONPATH=. .venv/bin/python benchmarks/peers/cost_growth.py --factors ways --tasks-per-pass 4 --ours-only \
        --output benchmarks/results/cost_growth_ways_4_tasks_per_pass.json   # ours with the meta-batch in groups

Every point is a fresh subprocess of `ours.py maml` / `theirs.py maml_learn2learn` (compare.py's workers and
their thread settings): the first step timed apart, `--warmup` steps untimed, the median of `--steps` timed ones.
Ours and theirs alternate which goes first from one point to the next. Without the peer venv
(`benchmarks/peers/make_venv.sh`) only ours is measured, and the record says so. The plot needs matplotlib
(`pip install matplotlib`; not a dependency of mssl-tf): without it the JSON is written and the plot is skipped
with a message. Timings are only worth keeping from an idle machine (the record holds the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402
import harness  # noqa: E402

BASE = {**harness.MAML_EPISODE, "inner_steps": 1}
SWEEPS = {
    "inner_steps": (1, 2, 5, 10),
    "meta_batch": (1, 4, 16, 32, 64),
    "ways": (5, 20, 60),
    "shots": (1, 5, 10),
}
QUICK_SWEEPS = {"inner_steps": (1, 2), "meta_batch": (1, 2), "ways": (5, 10), "shots": (1, 2)}


def points(sweeps: dict, base: dict) -> list[tuple[str, dict]]:
    """(factor, shape) for every value of every factor, the others at `base`; the base shape is measured once
    per factor, so each sweep's points come from consecutive subprocesses."""
    return [(factor, {**base, factor: value}) for factor, values in sweeps.items() for value in values]


def shape_arguments(shape: dict) -> list[str]:
    return [argument for name, value in shape.items()
            for argument in ("--" + name.replace("_", "-"), str(value))]


def failure_reason(failure) -> str:
    if failure.returncode == -9:
        return f"killed (SIGKILL) at {failure.max_rss_mb} MB: out of memory (the machine has 24 GiB)"
    if failure.returncode == -11:
        return f"crashed (SIGSEGV, no Python error) at {failure.max_rss_mb} MB"
    return f"exited with {failure.returncode}: " + (str(failure).strip().splitlines() or [""])[-1][:300]


def summarize_point(factor: str, shape: dict, results: dict[str, dict]) -> dict:
    """One point: each entrant's median step and first step (or why it failed), and the ratio (theirs / ours:
    > 1, ours faster) when both ran."""
    entrants = {label: result if "failed" in result else {
                    "median_step_seconds": round(statistics.median(result["step_seconds"]), 4),
                    "step_seconds": [round(value, 4) for value in result["step_seconds"]],
                    "first_step_seconds": round(result["first_step_seconds"], 2),
                    "max_rss_mb": result["max_rss_mb"]}
                for label, result in results.items()}
    point = {"factor": factor, "shape": shape, "entrants": entrants}
    ours, theirs = entrants.get("ours/maml"), entrants.get("theirs/maml_learn2learn")
    if ours and theirs and "failed" not in ours and "failed" not in theirs:
        point["speedup_over_learn2learn"] = round(theirs["median_step_seconds"] / ours["median_step_seconds"], 3)
    return point


def cell(entrant: dict | None) -> str:
    if entrant is None:
        return ""
    if "failed" in entrant:
        return {"killed": "out of memory", "crashed": "crashed (SIGSEGV)"}.get(entrant["failed"].split()[0], "failed")
    return str(entrant["median_step_seconds"])


def markdown_table(record: dict) -> str:
    """The record as a table: one row per point, seconds per meta-iteration on each side and the ratio."""
    lines = ["| varied | ways | shots | queries | meta-batch | inner steps | mssl-tf s | learn2learn s | "
             "learn2learn / mssl-tf |", "|---|---|---|---|---|---|---|---|---|"]
    for point in record["points"]:
        shape, entrants = point["shape"], point["entrants"]
        ours, theirs = (cell(entrants.get(label)) for label in ("ours/maml", "theirs/maml_learn2learn"))
        lines.append(f"| {point['factor']} | {shape['ways']} | {shape['shots']} | {shape['queries']} | "
                     f"{shape['meta_batch']} | {shape['inner_steps']} | {ours} | {theirs} | "
                     f"{point.get('speedup_over_learn2learn', '')} |")
    return "\n".join(lines)


def plot(record: dict, path: Path) -> bool:
    """One panel per factor, seconds per meta-iteration against the factor, both sides; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (`pip install matplotlib`): no plot written", flush=True)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = list(dict.fromkeys(point["factor"] for point in record["points"]))
    figure, axes = plt.subplots(1, len(factors), figsize=(4 * len(factors), 3.6), squeeze=False)
    for axis, factor in zip(axes[0], factors):
        chosen = [point for point in record["points"] if point["factor"] == factor]
        values = [point["shape"][factor] for point in chosen]
        grouped = record.get("ours_tasks_per_pass")
        ours_name = f"mssl-tf, {grouped} tasks per pass" if isinstance(grouped, int) else "mssl-tf"
        for label, name, color in (("ours/maml", ours_name, "C0"), ("theirs/maml_learn2learn", "learn2learn", "C1")):
            measured = [(point["shape"][factor], point["entrants"][label]["median_step_seconds"])
                        for point in chosen if "median_step_seconds" in point["entrants"].get(label, {})]
            if measured:  # a point that failed (out of memory) is left out of its line
                axis.plot(*zip(*measured), marker="o", label=name, color=color)
        axis.set_xlabel(factor.replace("_", " "))
        axis.set_xticks(values)
        axis.set_ylabel("seconds per meta-iteration")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    base = record["base_task"]
    figure.suptitle(f"Second-order MAML, Conv-4, 2 CPU threads; the other factors at {base['ways']}-way "
                    f"{base['shots']}-shot, {base['queries']} queries, meta-batch {base['meta_batch']}, "
                    f"{base['inner_steps']} inner step (commit {record['commit'][:7]})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def run(args) -> dict:
    load_before = compare.load_average()  # first: the learn2learn probe (torch import) raises it itself
    settings = {"warmup": args.warmup, "steps": args.steps, "quick": False}
    peer_python = Path(args.peer_python)
    peer_error = ("not asked for (--ours-only)" if args.ours_only
                  else "no peer venv (benchmarks/peers/make_venv.sh)" if not peer_python.exists()
                  else compare.learn2learn_status(peer_python))
    entrants = [("ours", "maml")] + ([("theirs", "maml_learn2learn")] if peer_error is None else [])
    from mssl_tf.results import current_commit

    commit = current_commit(compare.REPOSITORY)
    if compare.contended(load_before):
        print(f"warning: load average {load_before} before the run: the timings will not be fit to publish",
              flush=True)
    base = {**BASE, "meta_batch": 2} if args.quick else BASE
    measured, versions = [], {}
    sweeps = QUICK_SWEEPS if args.quick else SWEEPS
    sweeps = {factor: values for factor, values in sweeps.items() if not args.factors or factor in args.factors}
    ours_arguments = ["--tasks-per-pass", str(args.tasks_per_pass)] if args.tasks_per_pass else []
    for index, (factor, shape) in enumerate(points(sweeps, base)):
        results = {}
        for side, workload in (entrants if index % 2 == 0 else entrants[::-1]):
            extra = shape_arguments(shape) + (ours_arguments if side == "ours" else [])
            command = compare.worker_command(side, workload, extra, settings, peer_python)
            label = compare.entrant_label(side, workload)
            try:
                result = compare.run_worker(command)
            except compare.WorkerFailed as failure:  # e.g. out of memory: recorded, and the sweep goes on
                results[label] = {"failed": failure_reason(failure), "max_rss_mb": failure.max_rss_mb}
                print(f"{factor}={shape[factor]} {label}: {results[label]['failed']}", flush=True)
                continue
            results[label] = result
            versions[side] = result["versions"]
            print(f"{factor}={shape[factor]} {label}: median step "
                  f"{statistics.median(result['step_seconds']):.3f} s, first {result['first_step_seconds']:.1f} s",
                  flush=True)
        measured.append(summarize_point(factor, shape, {label: results[label] for label in sorted(results)}))
    return {
        "benchmark": "cost growth of second-order MAML (issue 14)",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/peers/cost_growth.py " + shlex.join(args.argv),
        "commit": commit,
        "cpu_model": compare.cpu_model(),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "base_task": base,
        "ours_tasks_per_pass": args.tasks_per_pass or "all tasks of the meta-batch in one pass (the default)",
        "method": "one subprocess per point and side (benchmarks/peers/ours.py maml, theirs.py maml_learn2learn), "
                  f"first step apart, {args.warmup} untimed, median of {args.steps} timed; the side that goes "
                  "first alternates between points; inputs fixed random tensors of the shapes",
        "learn2learn": "learn2learn 0.2.0 (make_venv.sh)" if peer_error is None else f"not measured: {peer_error}",
        "threads": harness.THREAD_ENVIRONMENT,
        "versions": versions,
        "load_average_1_5_15_min": {"before": load_before, "after": compare.load_average()},
        "contended": compare.contended(load_before),
        "points": measured,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first, per subprocess")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per subprocess")
    parser.add_argument("--quick", action="store_true", help="sanity run: tiny sweeps, meta-batch 2, 1 timed step")
    parser.add_argument("--peer-python", default=str(compare.PEER_PYTHON))
    parser.add_argument("--output", default=None,
                        help="default benchmarks/results/cost_growth.json (runs/cost_growth-quick.json with --quick)")
    parser.add_argument("--plot-only", metavar="JSON", help="redraw the PNG (beside the JSON) from a record")
    parser.add_argument("--factors", nargs="*", choices=sorted(SWEEPS), help="sweeps to run (default: all)")
    parser.add_argument("--ours-only", action="store_true", help="time mssl-tf only (e.g. a setting of ours "
                        "against learn2learn's points of an earlier record)")
    parser.add_argument("--tasks-per-pass", type=int, default=None,
                        help="ours: the meta-batch's gradient this many tasks at a time (memory bound)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.plot_only:
        record_path = Path(args.plot_only)
        record = json.loads(record_path.read_text())
    else:
        if args.quick:
            args.warmup, args.steps = 0, 1
        record_path = Path(args.output or ("runs/cost_growth-quick.json" if args.quick
                                           else "benchmarks/results/cost_growth.json"))
        record = run(args)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {record_path}")
    print(markdown_table(record))
    if plot(record, record_path.with_suffix(".png")):
        print(f"wrote {record_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
