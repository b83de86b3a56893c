"""`mssl-tf` command line: train, eval, results, pipeline."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

DEFAULT_SETTINGS = "5w1s,5w5s,20w1s,20w5s"


def parse_settings(text: str) -> list[tuple[int, int]]:
    """`"5w1s,20w5s"` → `[(5, 1), (20, 5)]`."""
    settings = []
    for item in text.split(","):
        ways, _, shots = item.strip().lower().partition("w")
        if not shots.endswith("s") or not ways.isdigit() or not shots[:-1].isdigit():
            raise argparse.ArgumentTypeError(f"setting {item!r} is not of the form <ways>w<shots>s, e.g. 5w1s")
        settings.append((int(ways), int(shots[:-1])))
    return settings


def parse_option(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"--option {text!r} is not key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_data_argument(parser):
    parser.add_argument(
        "--data-dir",
        default=None,
        help="Omniglot directory (official zips + splits/vinyals/*.txt); default $MSSL_TF_OMNIGLOT_DIR "
        "or ../shared/data/omniglot",
    )
    parser.add_argument(
        "--source", choices=["zips", "tfds"], default="zips",
        help="decode the official zips in --data-dir, or read Omniglot through TensorFlow Datasets "
        "(pip install 'mssl-tf[tfds]'; split files still come from --data-dir)",
    )


def command_line(argv) -> str:
    return "mssl-tf " + " ".join(shlex.quote(argument) for argument in argv)


def train_command(args) -> int:
    from mssl_tf.training import TrainConfig, train
    from mssl_tf.unsupervised_training import config_fields

    options = dict(args.option or [])
    for name in ("inner_steps", "evaluation_inner_steps", "inner_learning_rate"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.first_order:
        options["first_order"] = True
    config = TrainConfig(
        method=args.method,
        data_dir=args.data_dir,
        source=args.source,
        ways=args.ways,
        shots=args.shots,
        queries=args.queries,
        meta_batch=args.meta_batch,
        batch_size=args.batch_size,
        views=args.views,
        probe=args.probe,
        steps=args.steps,
        steps_per_epoch=args.steps_per_epoch,
        minutes=args.minutes,
        learning_rate=args.learning_rate,
        halve_every=args.halve_every or None,
        seed=args.seed,
        strategy=args.strategy,
        devices=args.devices,
        jit_compile=args.jit_compile,
        method_options=options,
        validate_episodes=args.validate_episodes,
        tensorboard=args.tensorboard,
        output=args.output,
        backup_dir=args.backup_dir,
        backup_every=args.backup_every,
        early_stop=args.early_stop,
        patience=args.patience,
        preemption_checkpoint=args.preemption_checkpoint,
        command=args.command_line,
        **config_fields(args),  # --tasks, --cluster-encoder, --init-from, --task-option
    )
    summary = train(config)
    print(f"trained {summary['steps']} steps ({summary['episodes']} tasks) in {summary['train_seconds']} s → "
          f"{Path(args.output) / 'model.keras'}")
    return 0


def evaluate_and_record(
    model_path, settings, episodes, queries, data_dir, results_dir=None, run_name=None, command="",
    split="test", evaluation_inner_steps=None, source="zips",
):
    """Evaluates a trained model on a Vinyals split (test by default); writes one record per setting when asked."""
    from mssl_tf.data import EpisodeSpec, load_split, resolve_data_dir
    from mssl_tf.evaluation import evaluate
    from mssl_tf.results import current_commit, write_record
    from mssl_tf.training import load_trained
    from mssl_tf.unsupervised_training import pretraining_seconds

    data_dir = resolve_data_dir(data_dir, require_zips=source == "zips")
    model, summary = load_trained(model_path)
    if evaluation_inner_steps is not None:
        if not hasattr(model, "evaluation_inner_steps"):
            raise ValueError(f"{type(model).__name__} has no inner loop; drop --evaluation-inner-steps")
        model.evaluation_inner_steps = evaluation_inner_steps
    test_images = load_split(split, data_dir, source)
    train_config = summary.get("config", {})
    rows = []
    if results_dir and summary:
        # The learning curve (validation accuracy against training time) is kept beside the test records.
        curve_file = Path(results_dir) / f"{run_name or Path(model_path).name}_training.json"
        curve_file.parent.mkdir(parents=True, exist_ok=True)
        curve_file.write_text(json.dumps(summary, indent=2) + "\n")
    for ways, shots in settings:
        if getattr(model, "ways", ways) != ways:
            print(f"skipping {ways}-way {shots}-shot: the model's classifier is {model.ways}-way")
            continue
        result = evaluate(model, test_images, EpisodeSpec(ways, shots, queries), episodes)
        record = {
            "run": run_name or Path(model_path).name,
            "method": train_config.get("method", type(model).__name__.lower()),
            "method_options": {**train_config.get("method_options", {}),
                               **({"evaluation_inner_steps": model.evaluation_inner_steps}
                                  if hasattr(model, "evaluation_inner_steps") else {})},
            "backbone": train_config.get("backbone", "conv4"),
            "dataset": "omniglot",
            "split": f"{split} (Vinyals)",
            "train_split": train_config.get("split", "unknown"),
            **result,
            "train_seconds": summary.get("train_seconds", 0.0),
            "pretraining_seconds": pretraining_seconds(summary),
            "train_tasks": summary.get("episodes", 0),
            "train_setting": {k: train_config.get(k) for k in ("ways", "shots", "queries", "meta_batch")},
            "labels_used": bool(summary.get("labels_used", True)),
            "command": {"train": train_config.get("command", ""), "eval": command},
            "commit": current_commit(Path(__file__).parent),
            "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        }
        rows.append(record)
        print(f"{ways}-way {shots}-shot: {result['accuracy']:.2f} ± {result['ci95']:.2f} % "
              f"({result['episodes']} episodes, {result['evaluation_seconds']} s)", flush=True)
        if results_dir:
            write_record(results_dir, f"{record['run']}_{ways}w{shots}s", record)
    return rows


def eval_command(args) -> int:
    if args.adaptation_steps:
        from mssl_tf.unsupervised_training import adaptation_command

        return adaptation_command(args)
    if args.protocol != "fewshot":
        from mssl_tf.ssl_training import evaluate_frozen_and_record

        evaluate_frozen_and_record(args.model, args.protocol, args.data_dir, args.split, args.source,
                                   args.results_dir, args.run_name, args.command_line)
        return 0
    evaluate_and_record(
        args.model, args.settings, args.episodes, args.queries, args.data_dir, args.results_dir, args.run_name,
        args.command_line, args.split, args.evaluation_inner_steps, args.source,
    )
    return 0


def results_command(args) -> int:
    from mssl_tf.results import update_readme

    print(update_readme(args.readme, args.results_dir))
    return 0


def pipeline_command(args) -> int:
    """The main job: train or load → export → serve → query embeddings (see `mssl_tf.pipeline`)."""
    from mssl_tf.pipeline import PipelineConfig, run

    run(PipelineConfig(
        entry=args.entry, train=args.train, minutes=args.minutes, workdir=args.workdir, retrain=args.retrain,
        export_dir=args.export_dir, name=args.name, version=args.version, episodes=args.episodes,
        data_dir=args.data_dir, source=args.source, serve_forever=args.serve_forever, command=args.command_line,
    ))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mssl_tf.data.views import VIEW_PRESETS
    from mssl_tf.methods import METHODS

    parser = argparse.ArgumentParser(prog="mssl-tf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="meta-train a method on Omniglot episodes with model.fit")
    train_parser.add_argument("--method", choices=sorted(METHODS), default="protonet")
    add_data_argument(train_parser)
    train_parser.add_argument("--ways", type=int, default=60)
    train_parser.add_argument("--shots", type=int, default=5)
    train_parser.add_argument("--queries", type=int, default=5)
    train_parser.add_argument("--meta-batch", type=int, default=1, help="tasks per optimizer step")
    train_parser.add_argument("--batch-size", type=int, default=256, help="SSL methods: images per optimizer step")
    train_parser.add_argument("--views", choices=sorted(VIEW_PRESETS), default="omniglot",
                              help="SSL methods: augmentation preset of the views (mssl_tf/data/views.py)")
    train_parser.add_argument("--probe", action="store_true",
                              help="SSL methods: online linear probe on stop-gradient features (uses the labels)")
    train_parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (meta-iterations) at most")
    train_parser.add_argument("--steps-per-epoch", type=int, default=100)
    train_parser.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    train_parser.add_argument("--learning-rate", type=float, default=1e-3)
    train_parser.add_argument("--halve-every", type=int, default=2000, help="halve the learning rate every N steps")
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument(
        "--strategy", choices=["default", "mirrored", "multiworker"], default="default",
        help="multiworker: run the same command on every host, each with its TF_CONFIG (docs/multiworker.md)",
    )
    train_parser.add_argument("--devices", type=int, default=None, help="logical CPU devices for --strategy mirrored")
    train_parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    train_parser.add_argument("--inner-steps", type=int, default=None)
    train_parser.add_argument("--evaluation-inner-steps", type=int, default=None)
    train_parser.add_argument("--inner-learning-rate", type=float, default=None)
    train_parser.add_argument("--first-order", action="store_true")
    train_parser.add_argument("--option", type=parse_option, action="append", help="method option key=value")
    train_parser.add_argument("--validate-episodes", type=int, default=200,
                              help="validation-split episodes scored after every epoch (learning curve)")
    train_parser.add_argument("--tensorboard", default=None, help="write TensorBoard logs to this directory")
    train_parser.add_argument("--output", default="runs/model")
    train_parser.add_argument("--backup-dir", default=None,
                              help="checkpoints for resuming a killed run (default OUTPUT/backup; shared by all "
                              "workers of a multiworker run)")
    train_parser.add_argument("--backup-every", type=int, default=100, help="steps between backups")
    train_parser.add_argument("--early-stop", default=None, metavar="METRIC",
                              help="stop when this epoch metric stops improving, e.g. validation_accuracy or loss")
    train_parser.add_argument("--patience", type=int, default=3, help="epochs without improvement for --early-stop")
    train_parser.add_argument("--preemption-checkpoint", action="store_true",
                              help="multiworker: on SIGTERM every worker saves a checkpoint and exits with code 42")
    from mssl_tf.unsupervised_training import add_eval_arguments, add_train_arguments

    add_train_arguments(train_parser)  # unsupervised tasks and --init-from
    train_parser.set_defaults(handler=train_command)

    eval_parser = commands.add_parser("eval", help="few-shot accuracy ± 95%% CI on the Vinyals test split")
    eval_parser.add_argument("model", help="model.keras or the training output directory")
    add_data_argument(eval_parser)
    eval_parser.add_argument("--settings", type=parse_settings, default=parse_settings(DEFAULT_SETTINGS))
    eval_parser.add_argument("--protocol", choices=["fewshot", "knn", "linear"], default="fewshot",
                             help="few-shot episodes, or kNN / linear probe of frozen embeddings "
                             "(mssl_tf.evaluation.knn_accuracy / linear_probe_accuracy)")
    eval_parser.add_argument("--episodes", type=int, default=600)
    eval_parser.add_argument("--queries", type=int, default=15)
    eval_parser.add_argument("--split", choices=["test", "val"], default="test",
                             help="val to choose options (e.g. inner steps) without touching the test split")
    eval_parser.add_argument("--evaluation-inner-steps", type=int, default=None,
                             help="inner-loop steps at evaluation for MAML-family models")
    eval_parser.add_argument("--results-dir", default=None, help="write one JSON record per setting here")
    eval_parser.add_argument("--run-name", default=None)
    add_eval_arguments(eval_parser)  # --adaptation-steps
    eval_parser.set_defaults(handler=eval_command)

    results_parser = commands.add_parser("results", help="regenerate README's results table from the records")
    results_parser.add_argument("--results-dir", default="benchmarks/results")
    results_parser.add_argument("--readme", default="README.md")
    results_parser.set_defaults(handler=results_command)

    pipeline_parser = commands.add_parser(
        "pipeline", help="the main job: train or load an encoder → export → serve → query embeddings")
    add_data_argument(pipeline_parser)
    pipeline_parser.add_argument("--entry", default="prototypical-networks-conv4-omniglot",
                                 help="zoo entry to load (default), unless --train")
    pipeline_parser.add_argument("--train", action="store_true", help="train a ProtoNet for --minutes instead")
    pipeline_parser.add_argument("--workdir", default="runs/pipeline", help="where --train keeps its model")
    pipeline_parser.add_argument("--minutes", type=float, default=3.0)
    pipeline_parser.add_argument("--retrain", action="store_true", help="with --train: ignore a model in --workdir")
    pipeline_parser.add_argument("--export-dir", default="export")
    pipeline_parser.add_argument("--name", default="omniglot-encoder", help="served model name")
    pipeline_parser.add_argument("--version", type=int, default=1)
    pipeline_parser.add_argument("--episodes", type=int, default=100, help="few-shot test episodes sent to the server")
    pipeline_parser.add_argument("--serve-forever", action="store_true", help="keep serving after the queries")
    pipeline_parser.set_defaults(handler=pipeline_command)

    from mssl_tf.cli_models import add_parsers as add_model_parsers

    add_model_parsers(commands, add_data_argument)
    from mssl_tf.serving.cli import add_parser as add_serve_parser

    add_serve_parser(commands)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = command_line(argv)
    try:
        return args.handler(args)
    except FileNotFoundError as error:
        print(f"mssl-tf: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
