"""Does the input pipeline keep the training step fed? The project's real `tf.data` pipeline against the same
step fed from batches cached in memory, measured in one run.

    nice -n 5 python benchmarks/pipeline_throughput.py [--output benchmarks/results/pipeline_throughput.json]

Per case, one model (built and compiled as `mssl-tf train` builds it: `mssl_tf.training.model.build_model`,
`make_optimizer`) and two iterators over the batches of `mssl_tf.training.datasets.training_dataset`:

- `real`: the pipeline as training uses it (episodes drawn, or images gathered and augmented, on the fly);
- `cached`: its first `--cached-batches` batches computed once, then `take(k).cache().repeat()`: the same step,
  the same shapes, no input work.

The step is the model's compiled `train_function` (what `model.fit` calls per step). After a warm-up (tracing,
filling the cache and the real pipeline's prefetch buffer; not timed), the two alternate in `--rounds` rounds
(real, cached, then cached, real in the next round, ...), each block running steps for `--block-seconds`.
Recorded per case: steps/s of each (total steps / total seconds over its blocks, and per block), the ratio
real / cached (over all blocks, and per round: the two adjacent blocks, under nearly the same load), the real
pipeline's own rate with no step running (half a block, after the rounds), and the run's
versions, thread settings, load average and command.

Cases: ProtoNet on Omniglot (28x28x1, 60-way 5-shot 5-query: the README's training) and on the OpenClipart folder
(32x32x3, 20-way 5-shot 5-query), SimCLR with the `rgb` views on the folder and with the `omniglot` views on
Omniglot (batch 256, two views).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mssl_tf.results import current_commit  # noqa: E402
from mssl_tf.training import TrainConfig  # noqa: E402
from mssl_tf.training.config import load_classes  # noqa: E402
from mssl_tf.training.datasets import training_dataset  # noqa: E402
from mssl_tf.training.model import build_model, make_optimizer  # noqa: E402

CLIPART = "/usr/share/openclipart/png"


def cases(data_dir, clipart):
    omniglot = {"dataset": "omniglot", "data_dir": data_dir}
    folder = {"dataset": f"imagefolder:{clipart}", "image_size": 32, "channels": 3, "min_images": 20}
    return {
        "protonet-omniglot-60w5s5q": TrainConfig(method="protonet", ways=60, shots=5, queries=5, **omniglot),
        "protonet-openclipart32-20w5s5q": TrainConfig(method="protonet", ways=20, shots=5, queries=5, **folder),
        "simclr-rgb-views-openclipart32-batch256": TrainConfig(method="simclr", batch_size=256, views="rgb", **folder),
        "simclr-omniglot-views-omniglot-batch256": TrainConfig(method="simclr", batch_size=256, views="omniglot",
                                                               **omniglot),
    }


def steps_for(step, iterator, seconds):
    """(steps, elapsed) of running `step(iterator)` until `seconds` have passed."""
    steps, start = 0, time.perf_counter()
    while True:
        logs = step(iterator)
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            float(logs["loss"])  # the step's outputs exist (the call is synchronous on CPU; this makes sure)
            return steps, elapsed


def measure(name, config, args):
    keras.utils.set_random_seed(config.seed)
    train_images = load_classes(config, config.split)
    model = build_model(config, load_classes(config, "val"))
    model.compile(optimizer=make_optimizer(config))
    model.make_train_function()
    train_function = model.train_function

    def step(iterator):
        outputs = train_function(iterator)
        return outputs.get_value() if isinstance(outputs, tf.experimental.Optional) else outputs

    real_dataset = training_dataset(config, train_images)
    cached_dataset = real_dataset.take(args.cached_batches).cache().repeat()
    real, cached = iter(real_dataset), iter(cached_dataset)

    start = time.perf_counter()
    for _ in range(args.cached_batches):  # fills the cache (and traces the step)
        step(cached)
    for _ in range(args.warmup_steps):
        step(real)
        step(cached)
    warmup_seconds = time.perf_counter() - start

    blocks = {"real": [], "cached": []}
    for round_index in range(args.rounds):
        order = ("real", "cached") if round_index % 2 == 0 else ("cached", "real")
        for kind in order:
            steps, elapsed = steps_for(step, real if kind == "real" else cached, args.block_seconds)
            blocks[kind].append({"steps": steps, "seconds": round(elapsed, 3),
                                 "steps_per_second": round(steps / elapsed, 3)})
    pipeline_steps, pipeline_seconds = 0, 0.0
    start = time.perf_counter()
    while pipeline_seconds < args.block_seconds / 2:  # the real pipeline alone, no step: its own rate
        tf.nest.map_structure(lambda tensor: tensor.numpy(), next(real))
        pipeline_steps += 1
        pipeline_seconds = time.perf_counter() - start
    rates = {kind: sum(block["steps"] for block in values) / sum(block["seconds"] for block in values)
             for kind, values in blocks.items()}
    # Each round's two blocks ran back to back, under nearly the same machine load: their ratio is paired.
    round_ratios = [real_block["steps_per_second"] / cached_block["steps_per_second"]
                    for real_block, cached_block in zip(blocks["real"], blocks["cached"])]
    element = tf.nest.map_structure(lambda spec: list(spec.shape), real_dataset.element_spec)
    result = {
        "method": config.method, "dataset": config.dataset.replace(CLIPART, "openclipart"),
        "image_shape": list(train_images.shape[2:]) if train_images.ndim == 5 else [*train_images.shape[2:], 1],
        "train_classes": int(train_images.shape[0]), "batch": element,
        "ways_shots_queries": [config.ways, config.shots, config.queries] if config.method == "protonet" else None,
        "batch_size": config.batch_size if config.method == "simclr" else None,
        "views": config.views if config.method == "simclr" else None,
        "backbone": config.backbone, "backbone_parameters": int(model.backbone.count_params()),
        "warmup_seconds": round(warmup_seconds, 1),
        "real_steps_per_second": round(rates["real"], 3), "cached_steps_per_second": round(rates["cached"], 3),
        "ratio_real_over_cached": round(rates["real"] / rates["cached"], 3),
        "round_ratios": [round(ratio, 3) for ratio in round_ratios],
        "median_round_ratio": round(float(np.median(round_ratios)), 3),
        "pipeline_alone_batches_per_second": round(pipeline_steps / pipeline_seconds, 3),
        "blocks": blocks,
    }
    print(f"{name}: real {rates['real']:.3f} steps/s, cached {rates['cached']:.3f} steps/s, "
          f"ratio {rates['real'] / rates['cached']:.3f} (per round: median {np.median(round_ratios):.3f}, "
          f"{min(round_ratios):.2f}-{max(round_ratios):.2f}); pipeline alone "
          f"{pipeline_steps / pipeline_seconds:.2f} batches/s (warm-up {warmup_seconds:.0f} s)", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="Omniglot (default $MSSL_TF_OMNIGLOT_DIR or "
                        "../shared/data/omniglot)")
    parser.add_argument("--clipart", default=CLIPART, help="a folder of class folders (apt-get install "
                        "openclipart-png)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block-seconds", type=float, default=7.0)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--cached-batches", type=int, default=8)
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    parser.add_argument("--output", default="benchmarks/results/pipeline_throughput.json")
    args = parser.parse_args()

    all_cases = cases(args.data_dir, args.clipart)
    chosen = args.cases.split(",") if args.cases else list(all_cases)
    load_before, start = os.getloadavg(), time.perf_counter()
    results = {name: measure(name, all_cases[name], args) for name in chosen}
    record = {
        "benchmark": "pipeline_throughput",
        "question": "steps/s of a real training step fed by the project's tf.data pipeline, over the same step fed "
                    "from batches cached in memory (take(k).cache().repeat()), alternating in one run",
        "command": " ".join(["python", *sys.argv]),
        "niceness": os.nice(0),
        "commit": current_commit(),
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "platform": platform.platform()},
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "tf_data": "AUTOTUNE parallel maps and prefetch on the default (shared) tf.data thread pool",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS")},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__},
        "settings": {"rounds": args.rounds, "block_seconds": args.block_seconds, "warmup_steps": args.warmup_steps,
                     "cached_batches": args.cached_batches},
        "cases": results,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output} ({record['seconds']} s)")


if __name__ == "__main__":
    main()
