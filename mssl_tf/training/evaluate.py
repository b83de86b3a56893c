"""Scoring a trained run on a split and recording it: few-shot episodes, frozen-encoder protocols (kNN, linear
probe) and adaptation curves, one record per result through `mssl_tf.training.records`.

These are what `mssl-tf eval` runs; each takes a run directory (or `model.keras`) and writes into `results_dir`
when given one: `<run>_<w>w<s>s.json` (results-table rows), `<run>_<protocol>.json`, `<run>_<w>w<s>s_adaptation.json`.
"""

from __future__ import annotations

from pathlib import Path

from mssl_tf.data import EpisodeSpec, resolve_data_dir
from mssl_tf.data.class_splits import DatasetOptions, load_class_split, split_label
from mssl_tf.evaluation import adaptation_curve, evaluate, knn_accuracy, linear_probe_accuracy
from mssl_tf.results import write_record
from mssl_tf.training.artifacts import load_trained, model_file, source_summary
from mssl_tf.training.records import evaluation_fields, method_name, write_learning_curve

FROZEN_PROTOCOLS = {"knn": knn_accuracy, "linear": linear_probe_accuracy}


def evaluation_classes(summary: dict, dataset: str | None, split: str, data_dir=None, source="zips"):
    """(dataset name, class arrays of `split`): the run's own dataset, read as it was trained, unless `dataset`."""
    train_config = summary.get("config", {})
    dataset = dataset or train_config.get("dataset", "omniglot")
    if dataset != "omniglot" and data_dir is None and dataset == train_config.get("dataset"):
        data_dir = train_config.get("data_dir")  # e.g. the TFDS data directory of a tfds:NAME run
    if dataset == "omniglot":
        data_dir = resolve_data_dir(data_dir, require_zips=source == "zips")
    options = DatasetOptions(image_size=train_config.get("image_size"), channels=train_config.get("channels"),
                             min_images=train_config.get("min_images", 20))
    return dataset, load_class_split(dataset, split, data_dir, source, options)


def _skips(model, ways: int, shots: int) -> bool:
    """True (and says why) when the model's classifier has a fixed width other than `ways` (`few_shot_ways`: e.g. a
    per-class head of an optimization-based learner; None when the method adapts to any width)."""
    fixed = getattr(model, "few_shot_ways", None)
    if fixed is not None and fixed != ways:
        print(f"skipping {ways}-way {shots}-shot: the model's classifier is {fixed}-way")
        return True
    return False


def apply_evaluation_options(model, options: dict) -> None:
    """Sets each of `options` the model declares in `EVALUATION_OPTIONS` (name → allowed values); refuses others."""
    allowed = getattr(model, "EVALUATION_OPTIONS", {})
    for name, value in options.items():
        if name not in allowed:
            raise ValueError(f"{type(model).__name__} has no evaluation option {name!r}; it has: "
                             f"{', '.join(sorted(allowed)) or 'none'}")
        if value not in allowed[name]:
            raise ValueError(f"{type(model).__name__}'s evaluation option {name}={value!r} is not one of "
                             f"{list(allowed[name])}")
        setattr(model, name, value)


def evaluate_and_record(model_path, settings, episodes=600, queries=15, data_dir=None, results_dir=None,
                        run_name=None, command="", split="test", evaluation_inner_steps=None,
                        source="zips", dataset=None, evaluation_options=None) -> list[dict]:
    """Few-shot accuracy ± 95% interval per `(ways, shots)` setting on fixed episodes of a split of the run's
    dataset (or `dataset`), with the expected calibration error of their query predictions (`ece`, percent).

    Writes one record per setting and the run's learning curve (`<run>_training.json`) when `results_dir` is given.
    `evaluation_options` set what the method lets evaluation change (its `EVALUATION_OPTIONS`, e.g. which of its
    networks scores a task), recorded among the record's `method_options`.
    """
    summary = source_summary(model_path)  # the data is checked (and named when missing) before the model loads
    dataset, test_images = evaluation_classes(summary, dataset, split, data_dir, source)
    model, summary = load_trained(model_path)
    if evaluation_inner_steps is not None:
        if not hasattr(model, "evaluation_inner_steps"):
            raise ValueError(f"{type(model).__name__} has no inner loop; drop --evaluation-inner-steps")
        model.evaluation_inner_steps = evaluation_inner_steps
    apply_evaluation_options(model, evaluation_options or {})
    train_config = summary.get("config", {})
    run = run_name or Path(model_path).name
    if results_dir and summary:
        write_learning_curve(results_dir, run, summary)
    rows = []
    for ways, shots in settings:
        if _skips(model, ways, shots):
            continue
        result = evaluate(model, test_images, EpisodeSpec(ways, shots, queries), episodes)
        record = {
            "run": run,
            "method": method_name(summary, model),
            "method_options": {**train_config.get("method_options", {}),
                               **({"evaluation_inner_steps": model.evaluation_inner_steps}
                                  if hasattr(model, "evaluation_inner_steps") else {}),
                               **(evaluation_options or {})},
            "backbone": train_config.get("backbone", "conv4"),
            "dataset": dataset,
            "split": split_label(dataset, split),
            "train_split": train_config.get("split", "unknown"),
            **result,
            "train_tasks": summary.get("episodes", 0),
            "train_setting": {key: train_config.get(key) for key in ("ways", "shots", "queries", "meta_batch")},
            **evaluation_fields(summary, command),
        }
        rows.append(record)
        print(f"{ways}-way {shots}-shot: {result['accuracy']:.2f} ± {result['ci95']:.2f} %, ECE {result['ece']:.2f} % "
              f"({result['episodes']} episodes, {result['evaluation_seconds']} s)", flush=True)
        if results_dir:
            write_record(results_dir, f"{run}_{ways}w{shots}s", record)
    return rows


def evaluate_frozen_and_record(model_path, protocol: str, data_dir=None, split="test", source="zips",
                               results_dir=None, run_name=None, command="", dataset=None) -> dict:
    """Scores a trained model's frozen embeddings by kNN or a linear probe on every class of a Vinyals split.

    Writes `<results_dir>/<run>_<protocol>.json` when asked (a record beside the few-shot results table).
    """
    dataset, class_images = evaluation_classes(source_summary(model_path), dataset, split, data_dir, source)
    model, summary = load_trained(model_path)
    result = FROZEN_PROTOCOLS[protocol](model, class_images)
    record = {
        "run": run_name or Path(model_path).name,
        "method": method_name(summary, model),
        "backbone": summary.get("config", {}).get("backbone", "conv4"),
        "dataset": dataset,
        "split": split_label(dataset, split),
        **result,
        **evaluation_fields(summary, command),
    }
    print(f"{protocol}: {result['accuracy']:.2f} ± {result['ci95']:.2f} % ({result['classes']}-way, "
          f"{result['scored']} images, {result['evaluation_seconds']} s)", flush=True)
    if results_dir:
        write_record(results_dir, f"{record['run']}_{protocol}", record)
    return record


def adaptation_and_record(model_path, settings, steps, episodes=600, queries=15, data_dir=None, split="test",
                          source="zips", results_dir=None, run_name=None, command="", dataset=None) -> list[dict]:
    """Accuracy after each number of adaptation steps (inner steps or memory write passes) on the same episodes,
    per setting; one `<run>_<w>w<s>s_adaptation.json` record per setting (a curve, not a results-table row)."""
    dataset, images = evaluation_classes(source_summary(model_path), dataset, split, data_dir, source)
    model, summary = load_trained(model_path)
    run = run_name or model_file(model_path).parent.name
    records = []
    for ways, shots in settings:
        if _skips(model, ways, shots):
            continue
        curve = adaptation_curve(model, images, EpisodeSpec(ways, shots, queries), steps, episodes)
        for point in curve:
            print(f"{ways}-way {shots}-shot after {point['steps']} steps: {point['accuracy']:.2f} ± "
                  f"{point['ci95']:.2f} % ({point['episodes']} episodes)", flush=True)
        record = {"run": run, "method": method_name(summary, model), "ways": ways, "shots": shots, "queries": queries,
                  "split": split_label(dataset, split), "adaptation": curve, **evaluation_fields(summary, command)}
        records.append(record)
        if results_dir:
            write_record(results_dir, f"{run}_{ways}w{shots}s_adaptation", record)
    return records
