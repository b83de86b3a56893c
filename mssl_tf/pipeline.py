"""The main job, end to end: train or load an encoder → export a SavedModel → serve it → query embeddings.

`mssl-tf pipeline` (README's first command) runs every stage on real data and real sockets (127.0.0.1):
1. the encoder: the zoo entry (sha256-checked shipped weights) by default, or `--train` for a fresh
   ProtoNet trained for `--minutes` (reused from `--workdir` when it is already there);
2. `export/<name>/<version>/`, the SavedModel TF Serving loads (the same writer as `mssl-tf export`);
3. the embedded TF-Serving-compatible server (`mssl-tf serve`) on ephemeral loopback ports;
4. embeddings over gRPC and REST, compared with the in-process Keras model, and few-shot accuracy on fixed test
   episodes through the served `few_shot` signature, compared with in-process evaluation of the same episodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mssl_tf.data import EpisodeSpec, episode_dataset, load_split
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
    data_dir: str | None = None
    source: str = "zips"
    serve_forever: bool = False
    command: str = ""


def obtain_model(config: PipelineConfig):
    """Stage 1: (model, provenance) from the zoo, an earlier pipeline run, or a fresh training run."""
    if not config.train:
        from mssl_tf import zoo

        card = zoo.read_card(config.entry)
        print(f"[1/4] loading zoo entry {config.entry} (weights sha256 {card['weights']['sha256'][:12]}…, checked)")
        return zoo.load(config.entry), {"zoo_entry": config.entry, "weights_sha256": card["weights"]["sha256"]}
    from mssl_tf.training import TrainConfig, load_trained, train

    model_path = Path(config.workdir) / "model.keras"
    if not model_path.is_file() or config.retrain:
        print(f"[1/4] training ProtoNet on Omniglot (Vinyals train split) for {config.minutes} min")
        train(TrainConfig(
            method="protonet", data_dir=config.data_dir, source=config.source, ways=20, shots=5, queries=5,
            steps=100_000, steps_per_epoch=100, minutes=config.minutes, output=config.workdir, command=config.command,
        ))
    else:
        print(f"[1/4] loading the model trained earlier in {model_path}")
    model, summary = load_trained(model_path)
    return model, {"source_path": str(model_path.resolve()), "training_command": summary["config"]["command"]}


def served_episode_accuracies(client, class_images, spec: EpisodeSpec, episodes: int) -> np.ndarray:
    """Per-episode accuracy of the served `few_shot` signature on the fixed evaluation episodes."""
    dataset = episode_dataset(class_images, spec, meta_batch=1, seed=EVALUATION_SEED, num_episodes=episodes)
    accuracies = []
    for batch in dataset:
        task = {key: value.numpy()[0] for key, value in batch.items()}
        to_uint8 = lambda images: np.rint(images * 255).astype(np.uint8)  # noqa: E731  (the wire format)
        result = client.few_shot(to_uint8(task["support_images"]), task["support_labels"],
                                 to_uint8(task["query_images"]))
        accuracies.append(np.mean(result["predictions"] == task["query_labels"]))
    return np.asarray(accuracies)


def run(config: PipelineConfig) -> dict:
    from mssl_tf.evaluation import episode_accuracies
    from mssl_tf.export import export_model
    from mssl_tf.serving import EmbeddingClient, ModelConfig, ModelServer, RestClient

    model, provenance = obtain_model(config)

    path = export_model(model, config.export_dir, config.name, config.version, overwrite=True,
                        provenance={**provenance, "pipeline_command": config.command})
    print(f"[2/4] exported the encoder → {path}")

    with ModelServer([ModelConfig(config.name, str(Path(config.export_dir).resolve() / config.name))],
                     port=0, rest_api_port=0) as server:
        grpc_address, rest_address = f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.rest_port}"
        print(f"[3/4] serving {config.name} version {config.version}: gRPC {grpc_address}, REST {rest_address}")

        test_images = load_split("test", config.data_dir, config.source)
        images = test_images[:64, 0][..., None]  # the first drawing of 64 test classes, uint8, ink = 255
        features = model.backbone(images.astype(np.float32) / 255.0, training=False).numpy()
        expected = features / np.linalg.norm(features, axis=1, keepdims=True)
        with EmbeddingClient(grpc_address, config.name) as client, RestClient(rest_address, config.name) as rest:
            start = time.perf_counter()
            served = client.embed(images)
            grpc_ms = 1000 * (time.perf_counter() - start)
            over_rest = rest.embed(images)
            spec = EpisodeSpec(5, 1, 15)
            served_accuracies = served_episode_accuracies(client, test_images, spec, config.episodes)
        local_accuracies = episode_accuracies(model, test_images, spec, config.episodes)
        summary = {
            "export": str(path),
            "embeddings_shape": list(served.shape),
            "grpc_max_abs_difference": float(np.abs(served - expected).max()),
            "rest_max_abs_difference": float(np.abs(over_rest - expected).max()),
            "grpc_batch64_ms": round(grpc_ms, 1),
            "served_5w1s": confidence_interval(served_accuracies),
            "in_process_5w1s": confidence_interval(local_accuracies),
        }
        print(f"[4/4] embeddings {tuple(served.shape)} over gRPC in {grpc_ms:.0f} ms; largest difference from the "
              f"in-process Keras model: gRPC {summary['grpc_max_abs_difference']:.1e}, "
              f"REST {summary['rest_max_abs_difference']:.1e}")
        for label, (mean, half_width) in (("served few_shot", summary["served_5w1s"]),
                                          ("in-process", summary["in_process_5w1s"])):
            print(f"      5-way 1-shot on {config.episodes} fixed test episodes, {label}: "
                  f"{100 * mean:.2f} ± {100 * half_width:.2f} %")
        print(f"      model status over REST: curl {rest_address}/v1/models/{config.name}")
        if config.serve_forever:
            print(f"serving until interrupted (Ctrl-C); same API as tensorflow_model_server --port {server.grpc_port}"
                  f" --rest_api_port {server.rest_port} --model_name {config.name} "
                  f"--model_base_path {Path(config.export_dir).resolve() / config.name}")
            try:
                server.wait()
            except KeyboardInterrupt:
                pass
    return summary
