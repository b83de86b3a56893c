"""CPU time of one validation pass (`episode_accuracies` on the Omniglot validation split, 5-way 1-shot 15-query, as
`mssl-tf train` runs after every epoch) with the traced evaluation kept between passes, against a new trace every
pass (what the code did before `mssl_tf.evaluation.episode_scorer`).

    python benchmarks/validation_retrace.py [--methods protonet maml] [--episodes 10 200] [--rounds 4]

Each round runs one pass of each kind, alternately, after a first pass that traces; process CPU seconds (all
threads) per pass. Prints one JSON line per (method, episodes) and writes them to --output.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from mssl_tf import backbones, evaluation  # noqa: E402
from mssl_tf.data import EpisodeSpec, load_split  # noqa: E402
from mssl_tf.methods import build_method  # noqa: E402

OPTIONS = {"maml": {"ways": 5, "inner_steps": 1, "evaluation_inner_steps": 3}}
SPEC = EpisodeSpec(5, 1, 15)


def cpu_seconds(function):
    start = time.process_time()
    function()
    return time.process_time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", nargs="+", default=["protonet", "maml"])
    parser.add_argument("--episodes", nargs="+", type=int, default=[10, 200])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--output", default="benchmarks/results/validation_retrace.json")
    args = parser.parse_args(argv)
    images = load_split("val")
    rows = []
    for name in args.methods:
        keras.utils.set_random_seed(0)
        model = build_method(name, backbones.conv4(), **OPTIONS.get(name, {}))
        for episodes in args.episodes:
            def validate():
                evaluation.episode_accuracies(model, images, SPEC, episodes, seed=7)

            def validate_retraced():
                evaluation._SCORERS.pop(model, None)  # the previous behaviour: a new tf.function every pass
                validate()

            validate()
            kept, retraced = [], []
            for _ in range(args.rounds):
                retraced.append(cpu_seconds(validate_retraced))
                kept.append(cpu_seconds(validate))
            row = {"method": name, "episodes": episodes, "rounds": args.rounds,
                   "retraced_cpu_seconds": [round(value, 3) for value in retraced],
                   "kept_cpu_seconds": [round(value, 3) for value in kept],
                   "kept_over_retraced": round(sum(kept) / sum(retraced), 3)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(args.output, "w") as file:
        json.dump({"spec": "5w1s15q", "split": "val", "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
