"""The model zoo: named, pretrained encoders loadable in one line, each checked against its card's sha256.

A zoo entry is a card, `zoo/<name>.json`, written by `mssl-tf zoo add` from one of the project's own training runs:
the method and backbone configuration (the model is rebuilt from it), the preprocessing, the data and split, the
exact training command and seed, the recorded metrics with their protocol and 95% interval, the weights file with
its sha256, the license and the paper. Weights come from the file beside the card (`zoo/weights/`) or from the
card's `url` (`file://`, `http://`, `https://`), downloaded once into `$MSSL_TF_CACHE_DIR/zoo/`; either way
the bytes are hashed before Keras reads them.

Example:
    >>> import mssl_tf
    >>> mssl_tf.zoo.list()
    ['prototypical-networks-conv4-omniglot', ...]
    >>> model = mssl_tf.zoo.load("prototypical-networks-conv4-omniglot")
    >>> embeddings = model(images)          # float32 [batch, 28, 28, 1], ink = 1
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import keras

from mssl_tf.data.omniglot import cache_dir

ZOO_DIR_ENV = "MSSL_TF_ZOO_DIR"
CARD_FIELDS = (
    "name", "description", "method", "method_options", "backbone", "preprocessing", "dataset", "training",
    "metrics", "weights", "license", "paper",
)


class WeightsHashMismatchError(ValueError):
    """A weights file's sha256 is not the one on its card."""


def zoo_dir() -> Path:
    """Where the cards are: `$MSSL_TF_ZOO_DIR`, else the zoo installed with the package (`mssl_tf/zoo_entries/`,
    see setup.py), else the repository's `zoo/` (a source checkout or an editable install)."""
    if os.environ.get(ZOO_DIR_ENV):
        return Path(os.environ[ZOO_DIR_ENV])
    installed = Path(__file__).resolve().parent / "zoo_entries"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "zoo"


def card_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or zoo_dir()) / f"{name}.json"


def available(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the zoo entries, sorted."""
    path = Path(directory or zoo_dir())
    return sorted(card.stem for card in path.glob("*.json")) if path.is_dir() else []


def read_card(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The card of entry `name`; an unknown name lists the known ones."""
    path = card_path(name, directory)
    if not path.is_file():
        raise KeyError(f"No zoo entry {name!r} in {path.parent}; available: {available(directory)}")
    card = json.loads(path.read_text())
    missing = [field for field in CARD_FIELDS if field not in card]
    if missing:
        raise ValueError(f"Zoo card {path} lacks {missing}")
    return card


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> Path:
    """Returns `path` if its sha256 is `expected`; raises `WeightsHashMismatchError` naming both hashes if not."""
    found = sha256_of(path)
    if found != expected:
        raise WeightsHashMismatchError(
            f"Weights file {path} has sha256 {found}, but its zoo card expects {expected}. The file is corrupt or "
            "not the one the card was made from: delete it (or the cached copy) and fetch it again."
        )
    return Path(path)


def fetch(url: str, expected_sha256: str, filename: str, cache: str | os.PathLike | None = None) -> Path:
    """The file at `url`, downloaded once into the cache (`<cache>/zoo/`) and verified on every call."""
    target = Path(cache or cache_dir()) / "zoo" / f"{expected_sha256[:16]}-{filename}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in ("file", "http", "https"):
            raise ValueError(f"Unsupported weights URL {url!r}: use file://, http:// or https://")
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.")
        try:
            with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, output)
            verify_sha256(partial, expected_sha256)  # a bad download never takes the cached name
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return verify_sha256(target, expected_sha256)


def weights_file(card: dict, directory: str | os.PathLike | None = None, cache=None) -> Path:
    """The verified weights of `card`: the shipped file if present, else its URL through the cache."""
    weights = card["weights"]
    shipped = Path(directory or zoo_dir()) / weights["file"] if weights.get("file") else None
    if shipped is not None and shipped.is_file():
        return verify_sha256(shipped, weights["sha256"])
    if weights.get("url"):
        return fetch(weights["url"], weights["sha256"], Path(weights.get("file") or "weights.weights.h5").name, cache)
    raise FileNotFoundError(f"Zoo entry {card['name']!r}: weights file {shipped} is missing and the card has no url")


def build(card: dict) -> keras.Model:
    """The untrained model a card describes (method around backbone), built from its configuration."""
    from mssl_tf.backbones import build_backbone
    from mssl_tf.methods import build_method

    from mssl_tf.input_spec import of_card

    if card["backbone"].get("keras_config"):  # a text backbone: its vocabulary is part of its configuration
        import mssl_tf.backbones.text  # noqa: F401  (registers the text backbone classes)

        backbone = keras.saving.deserialize_keras_object(card["backbone"]["keras_config"])
        return build_method(card["method"], backbone, **card["method_options"])
    backbone_config = {"input_shape": of_card(card).shape, **card["backbone"].get("config", {})}
    backbone = build_backbone(card["backbone"]["name"], **backbone_config)
    return build_method(card["method"], backbone, **card["method_options"])


def input_spec(name: str, directory: str | os.PathLike | None = None):
    """The `InputSpec` of entry `name`: what its encoder takes and how image files map to it."""
    from mssl_tf.input_spec import of_card

    return of_card(read_card(name, directory))


def dataset_of(card: dict):
    """(the `--dataset` name, `DatasetOptions`) an entry was trained and scored on, read as it was then."""
    from mssl_tf.data.class_splits import DatasetOptions
    from mssl_tf.input_spec import of_card

    spec = of_card(card)
    settings = card.get("dataset", {}).get("data", {}).get("settings", {})
    if spec.kind == "text":
        data = card.get("dataset", {}).get("data", {})
        return card["dataset"]["name"], DatasetOptions(min_images=data.get("min_examples", 20),
                                                       seed=data.get("seed", 0))
    return card.get("dataset", {}).get("name", "omniglot"), DatasetOptions(
        image_size=spec.height, channels=spec.channels, min_images=settings.get("min_images", 20),
        seed=settings.get("seed", 0))


def load(name: str, directory: str | os.PathLike | None = None, cache=None) -> keras.Model:
    """Entry `name` as a built Keras model with its pretrained weights (sha256 checked first).

    The result is the method model (e.g. `ProtoNet`); `model.backbone` is the encoder, and calling the model on
    float32 images of the card's `input` (e.g. `[batch, 28, 28, 1]`, ink = 1, for Omniglot; `input_spec(name)`)
    gives its features.
    """
    card = read_card(name, directory)
    model = build(card)
    model.load_weights(weights_file(card, directory, cache))
    return model


PAPERS = {
    "protonet": "Snell, Swersky & Zemel, Prototypical Networks for Few-shot Learning, NeurIPS 2017, arXiv:1703.05175",
    "matching": "Vinyals et al., Matching Networks for One Shot Learning, NeurIPS 2016, arXiv:1606.04080",
    "siamese": "Koch, Zemel & Salakhutdinov, Siamese Neural Networks for One-shot Image Recognition, ICML 2015 "
               "Deep Learning Workshop",
    "relation": "Sung et al., Learning to Compare: Relation Network for Few-Shot Learning, CVPR 2018, "
                "arXiv:1711.06025",
    "maml": "Finn, Abbeel & Levine, Model-Agnostic Meta-Learning, ICML 2017, arXiv:1703.03400",
    "fomaml": "Finn, Abbeel & Levine, Model-Agnostic Meta-Learning, ICML 2017, arXiv:1703.03400",
    "metasgd": "Li et al., Meta-SGD: Learning to Learn Quickly for Few-Shot Learning, arXiv:1707.09835",
    "anil": "Raghu et al., Rapid Learning or Feature Reuse?, ICLR 2020, arXiv:1909.09157",
    "reptile": "Nichol, Achiam & Schulman, On First-Order Meta-Learning Algorithms, arXiv:1803.02999",
    "imaml": "Rajeswaran, Finn, Kakade & Levine, Meta-Learning with Implicit Gradients, NeurIPS 2019, "
             "arXiv:1909.04630",
    "simclr": "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020, "
              "arXiv:2002.05709",
    "moco": "Chen et al., Improved Baselines with Momentum Contrastive Learning, arXiv:2003.04297",
    "psco": "Jang, Hwang, Shin & Kim, Unsupervised Meta-learning via Few-shot Pseudo-supervised Contrastive "
            "Learning, ICLR 2023, arXiv:2303.00996",
    "byol": "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020, arXiv:2006.07733",
    "simsiam": "Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021, arXiv:2011.10566",
    "barlow_twins": "Zbontar et al., Barlow Twins, ICML 2021, arXiv:2103.03230",
    "transformation": "Gidaris, Singh & Komodakis, Unsupervised Representation Learning by Predicting Image "
                      "Rotations, ICLR 2018, arXiv:1803.07728",
    "memory": "after Santoro et al., Meta-Learning with Memory-Augmented Neural Networks, ICML 2016, and Miller et "
              "al., Key-Value Memory Networks for Directly Reading Documents, EMNLP 2016, arXiv:1606.03126",
    "simcse": "Gao, Yao & Chen, SimCSE: Simple Contrastive Learning of Sentence Embeddings, EMNLP 2021, "
              "arXiv:2104.08821",
    "hypernetwork": "after Qiao et al., Few-Shot Image Recognition by Predicting Parameters from Activations, "
                    "CVPR 2018, arXiv:1706.03466",
}
LICENSE = "Apache-2.0 (these weights, like the code); trained on Omniglot, MIT license (Lake et al. 2015)"
TEXT_LICENSE = ("Apache-2.0 (these weights, like the code); trained on WordNet 3.0, WordNet 3.0 license (Princeton "
                "University, permissive, https://wordnet.princeton.edu/license-and-commercial-use)")
PREPROCESSING = {
    "input_shape": [28, 28, 1], "dtype": "float32", "range": [0.0, 1.0], "ink": 1.0, "background": 0.0,
    "from_drawings": "105x105 PNG → grayscale → Lanczos resize to 28x28 → 255 − value → divide by 255 "
                     "(mssl_tf.data.omniglot.preprocess)",
}
MODEL_BASE_KEYS = ("name", "trainable", "dtype")
METRIC_KEYS = ("split", "ways", "shots", "queries", "episodes", "accuracy", "ci95")


def create_entry(
    name: str, run_dir: str | os.PathLike, records: list[dict], description: str,
    directory: str | os.PathLike | None = None,
) -> Path:
    """Writes card `<zoo>/<name>.json` and `<zoo>/weights/<name>.weights.h5` from a training run and its records.

    Args:
        name: entry name, whole words (e.g. `prototypical-networks-conv4-omniglot`).
        run_dir: a `mssl-tf train --output` directory (model.keras + train.json).
        records: evaluation records of that model (`mssl-tf eval --results-dir`), copied into `metrics`.
        description: one sentence for `mssl-tf zoo list`.
        directory: the zoo directory (default `zoo_dir()`).
    """
    from mssl_tf.data.class_splits import split_label
    from mssl_tf.evaluation import EVALUATION_SEED
    from mssl_tf.input_spec import for_dataset, of_text_encoder
    from mssl_tf.training.artifacts import load_trained

    if not records:
        raise ValueError(f"No evaluation records for {run_dir}: run `mssl-tf eval {run_dir} --results-dir ...` first")
    directory = Path(directory or zoo_dir())
    model, summary = load_trained(run_dir)
    config = summary["config"]
    dataset = config.get("dataset", "omniglot")
    text = bool(getattr(model.backbone, "TAKES_TEXT", False))
    spec = of_text_encoder(model.backbone) if text else for_dataset(dataset, model.backbone.input_shape[1:])
    options = {key: value for key, value in model.get_config().items() if key not in (*MODEL_BASE_KEYS, "backbone")}
    for record in records:  # the options the metrics were measured with (e.g. MAML's evaluation inner steps)
        options.update({key: value for key, value in record.get("method_options", {}).items() if key in options})
    weights = Path("weights") / f"{name}.weights.h5"
    (directory / weights).parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(directory / weights)
    card = {
        "name": name,
        "description": description,
        "method": config["method"],
        "method_options": options,
        "backbone": {"name": config.get("backbone", "conv4"), "config": {},
                     **({"keras_config": keras.saving.serialize_keras_object(model.backbone)} if text else {})},
        "input": spec.to_dict(),
        "preprocessing": PREPROCESSING if spec.kind == "drawings" else spec.to_dict(),
        "dataset": {"name": dataset, "train_split": split_label(dataset, config.get("split", "train")),
                    "labels_used": bool(summary.get("labels_used", True)),
                    **({"data": summary["data"]} if summary.get("data") else {})},
        "training": {
            "command": config.get("command", ""), "seed": config.get("seed"),
            "train_seconds": summary.get("train_seconds"), "steps": summary.get("steps"),
            "tasks": summary.get("episodes"), "commit": records[0].get("commit"),
            "hardware": records[0].get("hardware"),
        },
        "metrics": [
            {"protocol": f"{type(model).__name__} classifying each episode's queries from its support set "
                         "(mssl_tf.evaluation.evaluate)", "evaluation_seed": EVALUATION_SEED,
             **{key: record[key] for key in METRIC_KEYS}, "eval_command": record.get("command", {}).get("eval", "")}
            for record in sorted(records, key=lambda r: (r["ways"], r["shots"]))
        ],
        "weights": {"file": str(weights), "sha256": sha256_of(directory / weights),
                    "bytes": (directory / weights).stat().st_size},
        "license": LICENSE if spec.kind == "drawings" else TEXT_LICENSE if dataset == "wordnet" else (
            f"Apache-2.0 (these weights, like the code); trained on {dataset}: its images' own license applies"),
        "paper": PAPERS.get(config["method"], ""),
    }
    path = card_path(name, directory)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


list = available  # noqa: A001  (`mssl_tf.zoo.list()`, as the issue and keras-hub's presets read)
