"""A training run's files: `<output>/model.keras` and `<output>/train.json`, read back by path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras


def model_file(path) -> Path:
    """`model.keras` inside a run directory, or the file itself."""
    path = Path(path)
    return path / "model.keras" if path.is_dir() else path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_summary(path) -> dict:
    """The `train.json` beside the trained model at `path` ({} when there is none)."""
    summary_file = model_file(path).parent / "train.json"
    return json.loads(summary_file.read_text()) if summary_file.is_file() else {}


def load_trained(path: str | Path):
    """A trained model (`model.keras` or its directory) and its training summary when present."""
    model_path = model_file(path)
    if not model_path.is_file():
        raise FileNotFoundError(f"No trained model at {model_path} (expected a .keras file or a directory holding "
                                "model.keras, as written by `mssl-tf train --output DIR`)")
    import mssl_tf.methods  # noqa: F401  (registers the serializable classes)

    return keras.saving.load_model(model_path), source_summary(model_path)
