"""Flag parsers and arguments the verbs share."""

from __future__ import annotations

import argparse
import json
import shlex

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
    """`key=value` with the value read as JSON when it parses (numbers, lists, booleans), else as text."""
    key, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_dataset_arguments(parser, default: str | None = "omniglot") -> None:
    """`--dataset` (any entry of the registry, `mssl_tf.data.class_splits.DATASETS`) and how it is read (the train
    verb's; eval reads the run's own unless told)."""
    from mssl_tf.data.class_splits import registry_help

    parser.add_argument("--dataset", default=default,
                        help=f"one of: {registry_help()} (docs/datasets.md)"
                        + ("" if default else "; default: the run's own"))
    if default:
        parser.add_argument("--image-size", type=int, default=None,
                            help="convert images to this square size (default: the dataset's own, folders 84; "
                            "omniglot is always 28)")
        parser.add_argument("--channels", type=int, choices=[1, 3], default=None,
                            help="convert images to 3 (RGB) or 1 (grayscale) channels (default: the dataset's own, "
                            "folders 3)")
        parser.add_argument("--min-images", type=int, default=20,
                            help="imagefolder and tfds: keep classes with at least this many images (folders: this "
                            "many each)")


def add_data_argument(parser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the dataset's files: Omniglot's official zips + splits/vinyals/*.txt (default $MSSL_TF_OMNIGLOT_DIR "
        "or ../shared/data/omniglot), CIFAR-10's, CIFAR-100's (cifar-fs) or STL-10's official files "
        "($MSSL_TF_CIFAR10_DIR, $MSSL_TF_CIFAR100_DIR, $MSSL_TF_STL10_DIR), or for tfds:NAME the TFDS data directory",
    )
    parser.add_argument(
        "--source", choices=["zips", "tfds"], default="zips",
        help="decode the official zips in --data-dir, or read Omniglot through TensorFlow Datasets "
        "(pip install 'mssl-tf[tfds]'; split files still come from --data-dir)",
    )


def command_line(argv) -> str:
    return "mssl-tf " + " ".join(shlex.quote(argument) for argument in argv)
