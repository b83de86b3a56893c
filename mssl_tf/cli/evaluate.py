"""`mssl-tf eval` (few-shot, frozen-encoder protocols, adaptation curves) and `mssl-tf results` (README table)."""

from __future__ import annotations

import argparse

from mssl_tf.cli.common import (DEFAULT_SETTINGS, add_data_argument, add_dataset_arguments, parse_option,
                                parse_settings)


def parse_steps(text: str) -> list[int]:
    """`"0,1,5"` → `[0, 1, 5]` (non-negative)."""
    try:
        steps = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--adaptation-steps {text!r} is not a comma-separated list of integers")
    if min(steps) < 0:
        raise argparse.ArgumentTypeError("--adaptation-steps must be non-negative")
    return steps


def add_parsers(commands) -> None:
    parser = commands.add_parser("eval", help="few-shot accuracy ± 95%% CI on the test split of the run's dataset")
    parser.add_argument("model", help="model.keras or the training output directory")
    add_dataset_arguments(parser, default=None)
    add_data_argument(parser)
    parser.add_argument("--settings", type=parse_settings, default=parse_settings(DEFAULT_SETTINGS))
    parser.add_argument("--protocol", choices=["fewshot", "knn", "linear"], default="fewshot",
                        help="few-shot episodes, or kNN / linear probe of frozen embeddings "
                        "(mssl_tf.evaluation.knn_accuracy / linear_probe_accuracy)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--split", choices=["test", "val"], default="test",
                        help="val to choose options (e.g. inner steps) without touching the test split")
    parser.add_argument("--evaluation-inner-steps", type=int, default=None,
                        help="inner-loop steps at evaluation, for models with an inner loop")
    parser.add_argument("--evaluation-option", type=parse_option, action="append", metavar="KEY=VALUE",
                        help="what the method lets evaluation change (its EVALUATION_OPTIONS), e.g. "
                        "evaluation=heads: score with the method's heads instead of the backbone")
    parser.add_argument("--adaptation-steps", type=parse_steps, default=None,
                        help="comma-separated numbers of inner steps (or memory write passes) to score, e.g. 0,1,5: "
                        "accuracy after each on the same episodes (mssl_tf.evaluation.adaptation_curve)")
    parser.add_argument("--results-dir", default=None, help="write one JSON record per setting here")
    parser.add_argument("--run-name", default=None)
    parser.set_defaults(handler=eval_command)

    results_parser = commands.add_parser("results", help="regenerate README's results table from the records")
    results_parser.add_argument("--results-dir", default="benchmarks/results")
    results_parser.add_argument("--readme", default="README.md")
    results_parser.set_defaults(handler=results_command)


def eval_command(args) -> int:
    from mssl_tf.training import evaluate

    common = {"dataset": args.dataset, "data_dir": args.data_dir, "split": args.split, "source": args.source,
              "results_dir": args.results_dir,
              "run_name": args.run_name, "command": args.command_line}
    if args.adaptation_steps:
        evaluate.adaptation_and_record(args.model, args.settings, args.adaptation_steps, args.episodes, args.queries,
                                       **common)
    elif args.protocol != "fewshot":
        evaluate.evaluate_frozen_and_record(args.model, args.protocol, **common)
    else:
        evaluate.evaluate_and_record(args.model, args.settings, args.episodes, args.queries,
                                     evaluation_inner_steps=args.evaluation_inner_steps,
                                     evaluation_options=dict(args.evaluation_option or []), **common)
    return 0


def results_command(args) -> int:
    from mssl_tf.results import update_readme

    print(update_readme(args.readme, args.results_dir))
    return 0
