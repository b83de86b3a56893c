"""`mssl-tf pipeline`: the main job (train or load → export → serve → query embeddings)."""

from __future__ import annotations

from mssl_tf.cli.common import add_data_argument, add_dataset_arguments


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "pipeline", help="the main job: train or load an encoder → export → serve → query embeddings")
    add_data_argument(parser)
    add_dataset_arguments(parser, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="with --train: the dataset's image size")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=None, help="with --train: 1 or 3 channels")
    parser.add_argument("--min-images", type=int, default=20, help="with --train on a folder: images per class")
    parser.add_argument("--zoo", "--entry", dest="entry", default="prototypical-networks-conv4-omniglot",
                        help="zoo entry to load (default: prototypical-networks-conv4-omniglot), unless --train")
    parser.add_argument("--train", action="store_true",
                        help="train a fresh encoder for --minutes instead (mssl_tf/pipeline.py says which)")
    parser.add_argument("--workdir", default="runs/pipeline", help="where --train keeps its model")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--retrain", action="store_true", help="with --train: ignore a model in --workdir")
    parser.add_argument("--export-dir", default="export")
    parser.add_argument("--name", default="omniglot-encoder", help="served model name")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=100, help="few-shot test episodes sent to the server")
    parser.add_argument("--file-episodes", type=int, default=20,
                        help="few-shot episodes sent as encoded image files (few_shot_png)")
    parser.add_argument("--serve-forever", action="store_true", help="keep serving after the queries")
    parser.add_argument("--record", default=None, help="write the summary to this JSON file (e.g. benchmarks/results/)")
    parser.set_defaults(handler=pipeline_command)


def pipeline_command(args) -> int:
    from mssl_tf.pipeline import PipelineConfig, run

    run(PipelineConfig(
        entry=args.entry, train=args.train, minutes=args.minutes, workdir=args.workdir, retrain=args.retrain,
        export_dir=args.export_dir, name=args.name, version=args.version, episodes=args.episodes,
        file_episodes=args.file_episodes, dataset=args.dataset, image_size=args.image_size, channels=args.channels,
        min_images=args.min_images, data_dir=args.data_dir, source=args.source, serve_forever=args.serve_forever,
        record=args.record, command=args.command_line,
    ))
    return 0
