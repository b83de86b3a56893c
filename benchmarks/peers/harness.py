"""What both sides of the peers benchmark share: the timing loop, the episode shapes and the line a worker prints.

Pure Python and numpy, so it imports in our venv and in the peer venv alike; each worker (`ours.py`,
`theirs.py`) runs one workload in its own process and prints one JSON line that `compare.py` reads.
"""

from __future__ import annotations

import json
import os
import time

THREADS = 2
RESULT_PREFIX = "PEERS_RESULT "

# Shapes of the timed tasks (issue 14): MAML 5-way 1-shot, 15 queries/class, meta-batch 32; ProtoNet 60-way
# 5-shot 5-query; SimCLR 256 images in two views.
MAML_EPISODE = {"ways": 5, "shots": 1, "queries": 15, "meta_batch": 32}
PROTONET_EPISODE = {"ways": 60, "shots": 5, "queries": 5}
SIMCLR_BATCH = 256
INNER_LEARNING_RATE = 0.4
OUTER_LEARNING_RATE = 1e-3
IMAGE_SHAPE = (28, 28, 1)


def task_shapes(quick: bool, maml_overrides: dict | None = None) -> tuple[dict, dict, int]:
    """(MAML episode, ProtoNet episode, SimCLR batch); `quick` shrinks them for a sanity run, and
    `maml_overrides` (ways, shots, queries, meta_batch: the cost-growth sweep) replace the MAML episode's values."""
    maml, protonet, batch_size = dict(MAML_EPISODE), dict(PROTONET_EPISODE), SIMCLR_BATCH
    if quick:
        maml["meta_batch"], protonet["ways"], batch_size = 2, 5, 16
    maml.update({key: value for key, value in (maml_overrides or {}).items() if value is not None})
    return maml, protonet, batch_size


def add_maml_shape_arguments(parser) -> None:
    """`--ways`, `--shots`, `--queries`, `--meta-batch`: the MAML episode of a worker, defaults MAML_EPISODE's."""
    for name in MAML_EPISODE:
        parser.add_argument("--" + name.replace("_", "-"), type=int, dest=name,
                            help=f"MAML episode's {name} (default {MAML_EPISODE[name]})")


def maml_overrides(args) -> dict:
    return {name: getattr(args, name) for name in MAML_EPISODE}


THREAD_ENVIRONMENT = {name: str(THREADS) for name in (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}


def pin_thread_environment() -> None:
    """Sets the environment variables both sides' math libraries read for their thread counts to `THREADS`."""
    os.environ.update(THREAD_ENVIRONMENT)


def process_memory_mb() -> dict:
    """This process's resident memory now and at its peak (VmRSS, VmHWM of /proc/self/status), in MB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS"), "peak_rss_mb": fields.get("VmHWM")}


def time_steps(step, warmup: int, steps: int, finish=lambda value: value) -> dict:
    """Runs `step()` 1 + `warmup` + `steps` times; `finish(result)` waits for the result (lazy runtimes).

    Returns the first call's seconds (tracing/compiling included) apart, and each of the `steps` timed calls;
    the `warmup` calls in between are not timed. Also the resident memory before the first call (libraries
    loaded, model built: what a step adds to it is the step's) and before the timed calls.
    """
    memory_before_first = process_memory_mb()["rss_mb"]
    start = time.perf_counter()
    finish(step())
    first = time.perf_counter() - start
    for _ in range(warmup):
        finish(step())
    memory_before = process_memory_mb()["rss_mb"]
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        finish(step())
        seconds.append(time.perf_counter() - start)
    return {"first_step_seconds": first, "step_seconds": seconds, "rss_before_first_step_mb": memory_before_first,
            "rss_before_timed_steps_mb": memory_before}


def emit(result: dict) -> None:
    """Prints the worker's result as the one line `compare.py` parses (other output may surround it)."""
    print(RESULT_PREFIX + json.dumps({**result, **process_memory_mb()}), flush=True)


def parse_result(output: str) -> dict:
    """The result a worker printed with `emit`, from its whole standard output."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ValueError("the worker printed no result line; its output ends with:\n" + output[-2000:])
