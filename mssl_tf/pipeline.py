"""The main job, end to end: train or load an encoder → export a SavedModel → serve it → query embeddings.

`mssl-tf pipeline` (README's first command) runs every stage on real data and real sockets (127.0.0.1):
1. the encoder: a zoo entry (`--zoo NAME`, sha256-checked shipped weights; the default entry unless told), or
   `--train` for a fresh ProtoNet trained for `--minutes` on `--dataset` (reused from `--workdir` when it is
   already there);
2. `export/<name>/<version>/`, the SavedModel TF Serving loads (the same writer as `mssl-tf export`);
3. the embedded TF-Serving-compatible server (`mssl-tf serve`) on ephemeral loopback ports;
4. on the test classes of the model's own dataset (or `--dataset`): embeddings over gRPC and REST, compared with
   the in-process Keras model; few-shot accuracy on fixed test episodes through the served `few_shot` signature,
   compared with in-process evaluation of the same episodes; and the same kind of episodes sent as encoded
   files to `few_shot_png` (an image folder's own files at their original size; for other datasets the test
   images encoded as PNG), whose answers must equal the in-process model's on the same bytes. A text entry
   (e.g. WordNet) is queried with its test sentences through `serving_default` and `few_shot`; it has no file
   signature.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mssl_tf.data import EpisodeSpec, episode_dataset
from mssl_tf.data.episodes import EVALUATION_SEED
from mssl_tf.evaluation import confidence_interval

DEFAULT_ENTRY = "prototypical-networks-conv4-omniglot"


@dataclass
class PipelineConfig:
    entry: str = DEFAULT_ENTRY
    train: bool = False
    minutes: float = 3.0
    workdir: str = "runs/pipeline"
    retrain: bool = False
    export_dir: str = "export"
    name: str = "omniglot-encoder"
    version: int = 1
    episodes: int = 100
    file_episodes: int = 20
    dataset: str | None = None  # None: the zoo entry's own (or omniglot for --train)
    image_size: int | None = None
    channels: int | None = None
    min_images: int = 20
    data_dir: str | None = None
    source: str = "zips"
    serve_forever: bool = False
    record: str | None = None  # write the summary (with the command and commit) to this JSON file
    command: str = ""


@dataclass
class Stage1:
    """What stage 1 hands on: the model, its provenance, its input spec and the data it is scored on."""

    model: object
    provenance: dict
    spec: object
    dataset: str
    options: object


def obtain_model(config: PipelineConfig) -> Stage1:
    """Stage 1: the model from the zoo, an earlier pipeline run, or a fresh training run, with its data."""
    from mssl_tf.data.class_splits import DatasetOptions
    from mssl_tf.input_spec import for_dataset, of_card

    if not config.train:
        from mssl_tf import zoo

        card = zoo.read_card(config.entry)
        print(f"[1/4] loading zoo entry {config.entry} (weights sha256 {card['weights']['sha256'][:12]}…, checked)")
        dataset, options = zoo.dataset_of(card)
        return Stage1(zoo.load(config.entry), {"zoo_entry": config.entry, "weights_sha256": card["weights"]["sha256"]},
                      of_card(card), config.dataset or dataset, options)
    from mssl_tf.training import TrainConfig, load_trained, train
    from mssl_tf.training.config import load_classes

    dataset = config.dataset or "omniglot"
    model_path = Path(config.workdir) / "model.keras"
    if not model_path.is_file() or config.retrain:
        train_config = TrainConfig(
            method="protonet", dataset=dataset, image_size=config.image_size, channels=config.channels,
            min_images=config.min_images, data_dir=config.data_dir, source=config.source, steps=100_000,
            steps_per_epoch=100, minutes=config.minutes, output=config.workdir, command=config.command)
        classes, per_class = load_classes(train_config, "train").shape[:2]
        # 20-way 5-shot 5-query episodes (Snell et al.'s higher-way training), narrowed to what the data holds.
        shots = min(5, per_class // 2)
        train_config.ways, train_config.shots, train_config.queries = min(20, classes), shots, min(5, per_class - shots)
        print(f"[1/4] training ProtoNet on {dataset} (its train split: {classes} classes) for {config.minutes} min, "
              f"{train_config.ways}-way {shots}-shot episodes")
        train(train_config)
    else:
        print(f"[1/4] loading the model trained earlier in {model_path}")
    model, summary = load_trained(model_path)
    trained = summary["config"]
    options = DatasetOptions(image_size=trained.get("image_size"), channels=trained.get("channels"),
                             min_images=trained.get("min_images", 20))
    return Stage1(model, {"source_path": str(model_path.resolve()), "training_command": trained["command"]},
                  for_dataset(trained.get("dataset", "omniglot"), model.backbone.input_shape[1:]),
                  trained.get("dataset", "omniglot"), options)


def as_uint8(images) -> np.ndarray:
    """Float images in [0, 1] (what episodes hold) → the uint8 wire format (exact: they were uint8 ÷ 255)."""
    return np.rint(np.asarray(images) * 255).astype(np.uint8)


def served_episode_accuracies(client, class_images, spec: EpisodeSpec, episodes: int) -> np.ndarray:
    """Per-episode accuracy of the served `few_shot` signature on the fixed evaluation episodes."""
    dataset = episode_dataset(class_images, spec, meta_batch=1, seed=EVALUATION_SEED, num_episodes=episodes)
    accuracies = []
    for batch in dataset:
        task = {key: value.numpy()[0] for key, value in batch.items()}
        if task["support_images"].dtype == object:  # sentences
            result = client.few_shot_sentences(task["support_images"], task["support_labels"], task["query_images"])
        else:
            result = client.few_shot(as_uint8(task["support_images"]), task["support_labels"],
                                     as_uint8(task["query_images"]))
        accuracies.append(np.mean(result["predictions"] == task["query_labels"]))
    return np.asarray(accuracies)


def file_episodes(stage: Stage1, class_images, spec: EpisodeSpec, episodes: int, data_dir=None):
    """`episodes` tasks of encoded files: (support files, support labels, query files, query labels) each.

    For an image folder: the files themselves (original sizes and formats) of the test classes, those the loader
    could read, drawn with a seeded generator. Otherwise: test images encoded as PNG at the model's size.
    """
    from mssl_tf.export import encode_png

    rng = np.random.default_rng(EVALUATION_SEED)
    kind, _, root = stage.dataset.partition(":")
    if kind == "imagefolder":
        from mssl_tf.data.image_folder import list_classes, load_image_folder

        splits = load_image_folder(root, stage.options.folder_settings())
        listed, _ = list_classes(Path(splits.root))
        unreadable = {entry["path"] for entry in splits.skipped}
        files = {name: [path for path in listed[name] if path.relative_to(splits.root).as_posix() not in unreadable]
                 for name in splits.classes["test"]}
        pools = [[path.read_bytes() for path in files[name]] for name in splits.classes["test"]]
    else:
        pools = [[encode_png(image if image.ndim == 3 else image[..., None], stage.spec) for image in images]
                 for images in class_images]
    for _ in range(episodes):
        classes = rng.choice(len(pools), spec.ways, replace=False)
        support, query = [], []
        for label, index in enumerate(classes):
            chosen = rng.choice(len(pools[index]), spec.shots + spec.queries, replace=False)
            support += [(pools[index][item], label) for item in chosen[: spec.shots]]
            query += [(pools[index][item], label) for item in chosen[spec.shots:]]
        yield ([data for data, _ in support], np.array([label for _, label in support], np.int32),
               [data for data, _ in query], np.array([label for _, label in query], np.int32))


def in_process_file_predictions(model, stage: Stage1, support_files, support_labels, query_files) -> np.ndarray:
    """The in-process model's answers on the same encoded files, decoded by the library's own decoder."""
    import tensorflow as tf

    from mssl_tf.input_spec import decode_encoded
    from mssl_tf.signatures import task_logits

    def decoded(files):
        return tf.cast(tf.stack([decode_encoded(tf.constant(data), stage.spec) for data in files]), tf.float32) / 255.0

    logits = task_logits(model, decoded(support_files), tf.constant(support_labels), decoded(query_files))
    return np.argmax(logits.numpy(), axis=-1)


def describe_input(spec) -> str:
    if spec.kind == "text":
        limit = f", up to {spec.sequence_length} tokens" if spec.sequence_length else ""
        return f"UTF-8 sentences{limit}, text"
    return f"{'x'.join(map(str, spec.shape))}, {spec.kind}"


def run(config: PipelineConfig) -> dict:
    import tensorflow as tf

    from mssl_tf.data.class_splits import load_class_split
    from mssl_tf.evaluation import episode_accuracies
    from mssl_tf.export import export_model
    from mssl_tf.serving import EmbeddingClient, ModelConfig, ModelServer, RestClient

    stage = obtain_model(config)
    model = stage.model
    data_dir = config.data_dir
    if stage.dataset == "omniglot":
        from mssl_tf.data import resolve_data_dir

        data_dir = resolve_data_dir(data_dir, require_zips=config.source == "zips")
    test_images = load_class_split(stage.dataset, "test", data_dir, config.source, stage.options)

    path = export_model(model, config.export_dir, config.name, config.version, overwrite=True, spec=stage.spec,
                        provenance={**stage.provenance, "pipeline_command": config.command})
    print(f"[2/4] exported the encoder → {path} (input {describe_input(stage.spec)})")

    with ModelServer([ModelConfig(config.name, str(Path(config.export_dir).resolve() / config.name))],
                     port=0, rest_api_port=0) as server:
        grpc_address, rest_address = f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.rest_port}"
        print(f"[3/4] serving {config.name} version {config.version}: gRPC {grpc_address}, REST {rest_address}")

        text = stage.spec.kind == "text"
        samples = test_images[:64, 0]  # the first image (or sentence) of (up to) 64 test classes
        if text:
            features = model.backbone(tf.constant(samples.astype(str)), training=False).numpy()
        else:
            samples = samples[..., None] if samples.ndim == 3 else samples  # uint8
            features = model.backbone(samples.astype(np.float32) / 255.0, training=False).numpy()
        expected = features / np.linalg.norm(features, axis=1, keepdims=True)
        spec = EpisodeSpec(5, 1, 15 if test_images.shape[1] >= 16 else test_images.shape[1] - 1)
        with EmbeddingClient(grpc_address, config.name) as client, RestClient(rest_address, config.name) as rest:
            embed, embed_over_rest = (client.embed_sentences, rest.embed_sentences) if text else (client.embed,
                                                                                                    rest.embed)
            start = time.perf_counter()
            served = embed(samples)
            grpc_ms = 1000 * (time.perf_counter() - start)
            over_rest = embed_over_rest(samples)
            served_accuracies = served_episode_accuracies(client, test_images, spec, config.episodes)
            file_agreement, file_accuracies = [], []
            for support, support_labels, query, query_labels in ([] if text else file_episodes(
                    stage, test_images, EpisodeSpec(5, 1, 5), config.file_episodes)):
                answers = client.few_shot_files(support, support_labels, query)["predictions"]
                local = in_process_file_predictions(model, stage, support, support_labels, query)
                file_agreement.append(np.mean(answers == local))
                file_accuracies.append(np.mean(answers == query_labels))
        local_accuracies = episode_accuracies(model, test_images, spec, config.episodes)
        summary = {
            "export": str(path),
            "dataset": stage.dataset,
            "input": stage.spec.to_dict(),
            "embeddings_shape": list(served.shape),
            "grpc_max_abs_difference": float(np.abs(served - expected).max()),
            "rest_max_abs_difference": float(np.abs(over_rest - expected).max()),
            "grpc_batch64_ms": round(grpc_ms, 1),
            "queries_per_class": spec.queries,
            "served_5w1s": confidence_interval(served_accuracies),
            "in_process_5w1s": confidence_interval(local_accuracies),
            "file_episodes": len(file_accuracies),
            "files_served_equal_in_process": float(np.mean(file_agreement)) if file_agreement else None,
            "files_served_5w1s": confidence_interval(file_accuracies) if len(file_accuracies) > 1 else None,
        }
        print(f"[4/4] embeddings {tuple(served.shape)} of {'sentences' if text else 'images'} over gRPC in "
              f"{grpc_ms:.0f} ms; largest difference from the "
              f"in-process Keras model: gRPC {summary['grpc_max_abs_difference']:.1e}, "
              f"REST {summary['rest_max_abs_difference']:.1e}")
        for label, (mean, half_width) in (("served few_shot", summary["served_5w1s"]),
                                          ("in-process", summary["in_process_5w1s"])):
            print(f"      5-way 1-shot on {config.episodes} fixed test episodes of {stage.dataset}, {label}: "
                  f"{100 * mean:.2f} ± {100 * half_width:.2f} %")
        if text:
            print("      (a text encoder takes sentences, not encoded files: no few_shot_png episodes)")
        elif file_agreement:
            print(f"      few_shot_png on {len(file_agreement)} episodes of encoded files: answers equal to the "
                  f"in-process model's on the same bytes: {100 * summary['files_served_equal_in_process']:.1f} %")
        print(f"      model status over REST: curl {rest_address}/v1/models/{config.name}")
        if config.record:
            from mssl_tf.results import current_commit, write_json
            from mssl_tf.training.records import hardware

            write_json(config.record, {"kind": "pipeline", **summary, "entry": None if config.train else config.entry,
                                       "command": config.command, "commit": current_commit(), "hardware": hardware()})
            print(f"      summary recorded in {config.record}")
        if config.serve_forever:
            print(f"serving until interrupted (Ctrl-C); same API as tensorflow_model_server --port {server.grpc_port}"
                  f" --rest_api_port {server.rest_port} --model_name {config.name} "
                  f"--model_base_path {Path(config.export_dir).resolve() / config.name}")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    return summary
