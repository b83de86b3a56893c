"""`mssl-tf zoo` and `mssl-tf export`: what happens to a trained model after training."""

from __future__ import annotations

import json
from pathlib import Path

from mssl_tf.cli.common import add_data_argument


def load_model_reference(reference: str):
    """A zoo entry name or a training output (directory or .keras file) → (model, provenance dict, default name,
    input spec)."""
    from mssl_tf import zoo
    from mssl_tf.input_spec import for_dataset, of_card, of_text_encoder

    if reference in zoo.available():
        card = zoo.read_card(reference)
        return zoo.load(reference), {"zoo_entry": reference, "weights_sha256": card["weights"]["sha256"],
                                     "training_command": card["training"]["command"]}, reference, of_card(card)
    if not Path(reference).exists():
        raise FileNotFoundError(f"{reference!r} is neither a zoo entry ({', '.join(zoo.available()) or 'none'}) "
                                "nor a trained model path (model.keras or a `mssl-tf train --output` directory)")
    from mssl_tf.training.artifacts import load_trained

    model, summary = load_trained(reference)
    path = Path(reference)
    name = (path if path.is_dir() else path.parent).name
    config = summary.get("config", {})
    encoder = getattr(model, "backbone", model)
    if getattr(encoder, "TAKES_TEXT", False):
        spec = of_text_encoder(encoder)
    else:
        spec = for_dataset(config.get("dataset", "omniglot"), encoder.input_shape[1:])
    return model, {"source_path": str(path.resolve()), "training_command": config.get("command", "")}, name, spec


def export_command(args) -> int:
    from mssl_tf.export import export_model, read_metadata

    model, provenance, default_name, spec = load_model_reference(args.model)
    path = export_model(model, args.base_dir, args.name or default_name, args.version, warmup=not args.no_warmup,
                        overwrite=args.overwrite, provenance=provenance, spec=spec)
    shape = "sentences" if spec.kind == "text" else f"{'x'.join(map(str, spec.shape))} {spec.kind}"
    print(f"exported {args.model} → {path} (input {shape}; signatures: "
          f"{', '.join(read_metadata(path)['signatures'])})")
    return 0


def zoo_list_command(args) -> int:
    from mssl_tf import zoo

    for name in zoo.available():
        card = zoo.read_card(name)
        scores = ", ".join(f"{m['ways']}w{m['shots']}s {m['accuracy']:.2f}±{m['ci95']:.2f}" for m in card["metrics"])
        print(f"{name}\n    {card['description']}\n    {scores}")
    return 0


def zoo_show_command(args) -> int:
    from mssl_tf import zoo

    print(json.dumps(zoo.read_card(args.name), indent=2))
    return 0


def zoo_add_command(args) -> int:
    from mssl_tf import zoo

    records = [json.loads(Path(path).read_text()) for path in args.records]
    path = zoo.create_entry(args.name, args.run, records, args.description)
    print(f"wrote {path} and its weights")
    return 0


def zoo_eval_command(args) -> int:
    """Re-measures every metric of a card with its protocol; fails if one falls outside the card's 95% interval."""
    from mssl_tf import zoo
    from mssl_tf.data import EpisodeSpec
    from mssl_tf.data.class_splits import load_class_split
    from mssl_tf.evaluation import evaluate

    card = zoo.read_card(args.name)
    dataset, options = zoo.dataset_of(card)  # the entry's own data, read as it was trained (size, channels)
    model = zoo.load(args.name)
    images_by_split = {}
    failures = 0
    for metric in card["metrics"]:
        split = metric["split"].split()[0]
        if split not in images_by_split:
            images_by_split[split] = load_class_split(dataset, split, args.data_dir, args.source, options)
        result = evaluate(model, images_by_split[split], EpisodeSpec(metric["ways"], metric["shots"],
                                                                      metric["queries"]), metric["episodes"])
        within = abs(result["accuracy"] - metric["accuracy"]) <= metric["ci95"]
        failures += not within
        print(f"{metric['ways']}-way {metric['shots']}-shot: measured {result['accuracy']:.2f} ± {result['ci95']:.2f}, "
              f"card {metric['accuracy']:.2f} ± {metric['ci95']:.2f} → {'within' if within else 'OUTSIDE'} the interval")
    return 1 if failures else 0


def add_parsers(commands) -> None:
    export_parser = commands.add_parser("export", help="write a trained encoder as a TF Serving SavedModel")
    export_parser.add_argument("model", help="zoo entry name, or model.keras / a `mssl-tf train --output` directory")
    export_parser.add_argument("--base-dir", default="export", help="TF Serving base directory (default: export)")
    export_parser.add_argument("--name", default=None, help="served model name (default: the entry or run name)")
    export_parser.add_argument("--version", type=int, default=None, help="version number (default: latest + 1)")
    export_parser.add_argument("--no-warmup", action="store_true", help="skip assets.extra/tf_serving_warmup_requests")
    export_parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export_parser.set_defaults(handler=export_command)

    zoo_parser = commands.add_parser("zoo", help="pretrained entries: list, show, add, eval")
    zoo_commands = zoo_parser.add_subparsers(dest="zoo_command", required=True)
    zoo_commands.add_parser("list", help="entries with their metrics").set_defaults(handler=zoo_list_command)
    show_parser = zoo_commands.add_parser("show", help="print an entry's card")
    show_parser.add_argument("name")
    show_parser.set_defaults(handler=zoo_show_command)
    add_parser = zoo_commands.add_parser("add", help="make an entry from a training run and its eval records")
    add_parser.add_argument("name")
    add_parser.add_argument("--run", required=True, help="`mssl-tf train --output` directory")
    add_parser.add_argument("--records", nargs="+", required=True, help="`mssl-tf eval --results-dir` JSON records")
    add_parser.add_argument("--description", required=True)
    add_parser.set_defaults(handler=zoo_add_command)
    eval_parser = zoo_commands.add_parser("eval", help="re-measure an entry's metrics and check them against its card")
    eval_parser.add_argument("name")
    add_data_argument(eval_parser)
    eval_parser.set_defaults(handler=zoo_eval_command)
