"""`mssl-tf` command line: one module per verb group, each with its flags.

`train` (`mssl_tf.cli.train`), `eval` and `results` (`mssl_tf.cli.evaluate`), `export` and `zoo`
(`mssl_tf.cli.models`), `pipeline` (`mssl_tf.cli.pipeline`), `serve` (`mssl_tf.serving.cli`: tensorflow_model_server's
flags, beside the server they configure). The work itself is in the library; these modules only parse.
"""

from __future__ import annotations

import argparse
import os
import sys

from mssl_tf.cli.common import command_line, parse_option, parse_settings

__all__ = ["build_parser", "main", "parse_option", "parse_settings"]


def build_parser() -> argparse.ArgumentParser:
    from mssl_tf.cli import evaluate, models, pipeline, train  # the verbs import TensorFlow: after main's setup
    from mssl_tf.serving.cli import add_parser as add_serve_parser

    parser = argparse.ArgumentParser(prog="mssl-tf", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up and log lines (hidden otherwise); may stand anywhere")
    commands = parser.add_subparsers(dest="command", required=True)
    train.add_parser(commands)
    evaluate.add_parsers(commands)
    pipeline.add_parser(commands)
    models.add_parsers(commands)
    add_serve_parser(commands)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" in argv:
        argv = [argument for argument in argv if argument != "--verbose"]
    else:
        # Before the first TensorFlow import: hides its C++ log lines, the "failed call to cuInit: CUDA error" of a
        # machine without a GPU included (an ERROR line). Failures still reach the user as Python exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    args.command_line = command_line(argv)
    try:
        return args.handler(args)
    except FileNotFoundError as error:
        print(f"mssl-tf: {error}", file=sys.stderr)
        return 2
