"""Omniglot (Lake et al. 2015) read from the official zips, with the Vinyals few-shot split.

The official release is two zips, `images_background.zip` (30 alphabets) and `images_evaluation.zip`
(20 alphabets), each `images_<part>/<Alphabet>/<characterNN>/<id>_<drawer>.png` with 20 drawings per
character. The Vinyals split (Snell et al. 2017 release) names classes as `<Alphabet>/<characterNN>/rot<deg>`:
every character rotated by 0/90/180/270 degrees is a class of its own.

Images are decoded once (28x28, ink = 1, stored as uint8 0..255) and cached as `.npz` keyed by the zips'
sha256, so a second run does not decode the 32,460 PNGs again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "MSSL_TF_OMNIGLOT_DIR"
CACHE_DIR_ENV = "MSSL_TF_CACHE_DIR"
ZIP_NAMES = ("images_background.zip", "images_evaluation.zip")
SPLIT_NAMES = ("train", "val", "trainval", "test")
DRAWINGS_PER_CHARACTER = 20
IMAGE_SIZE = 28


class DatasetNotFoundError(FileNotFoundError):
    """The Omniglot directory is missing or incomplete."""


@dataclass(frozen=True)
class OmniglotCharacters:
    """All decoded characters.

    Attributes:
        names: `<Alphabet>/<characterNN>` for each character, sorted.
        images: uint8 array `[characters, 20, 28, 28]`, ink = 255.
    """

    names: tuple[str, ...]
    images: np.ndarray


def default_data_dir() -> Path | None:
    """The data directory from `$MSSL_TF_OMNIGLOT_DIR`, or `../shared/data/omniglot` when it exists."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    for candidate in (Path.cwd() / "../shared/data/omniglot", Path(__file__).parents[3] / "shared/data/omniglot"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def resolve_data_dir(data_dir: str | os.PathLike | None, require_zips: bool = True) -> Path:
    """Checks that `data_dir` (or the default) holds the zips and split files; raises one clear error if not."""
    path = Path(data_dir) if data_dir else default_data_dir()
    expected = [*(ZIP_NAMES if require_zips else ()), *(f"splits/vinyals/{name}.txt" for name in SPLIT_NAMES)]
    if path is None:
        raise DatasetNotFoundError(
            f"No Omniglot directory given. Pass --data-dir or set ${DATA_DIR_ENV} to a directory holding: "
            + ", ".join(expected)
        )
    missing = [name for name in expected if not (path / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Omniglot directory {path} is incomplete: missing {', '.join(missing)}. "
            f"Pass --data-dir or set ${DATA_DIR_ENV} to a directory holding: {', '.join(expected)} "
            "(the official zips of Lake et al. 2015 and the Vinyals split files of Snell et al. 2017)."
        )
    return path


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "mssl_tf"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preprocess(image) -> np.ndarray:
    """One Omniglot drawing (PIL image or array, white background) → 28x28 uint8 with ink = 255."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.squeeze() if image.ndim == 3 and image.shape[-1] == 1 else image)
    small = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    ink = 255.0 - np.asarray(small, dtype=np.float32)
    return np.clip(np.rint(ink), 0, 255).astype(np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    """One Omniglot PNG (105x105) → 28x28 uint8 with ink = 255."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return preprocess(image)


def _decode_zip(zip_path: Path) -> dict[str, np.ndarray]:
    """Character name → `[20, 28, 28]` drawings, sorted by file name."""
    drawings: dict[str, list[tuple[str, np.ndarray]]] = {}
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            parts = member.split("/")
            if len(parts) != 4 or not parts[3].endswith(".png"):
                continue
            character = f"{parts[1]}/{parts[2]}"
            drawings.setdefault(character, []).append((parts[3], decode_png(archive.read(member))))
    decoded = {}
    for character, items in drawings.items():
        if len(items) != DRAWINGS_PER_CHARACTER:
            raise ValueError(f"{zip_path}: {character} has {len(items)} drawings, expected {DRAWINGS_PER_CHARACTER}")
        decoded[character] = np.stack([image for _, image in sorted(items)])
    return decoded


def load_characters(data_dir: str | os.PathLike | None = None) -> OmniglotCharacters:
    """Decodes both official zips (or reads the cache) into one array of characters."""
    path = resolve_data_dir(data_dir)
    key = hashlib.sha256("".join(_sha256(path / name) for name in ZIP_NAMES).encode()).hexdigest()[:16]
    cache_file = cache_dir() / f"omniglot{IMAGE_SIZE}_{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as cached:
            return OmniglotCharacters(tuple(str(name) for name in cached["names"]), cached["images"])
    with concurrent.futures.ProcessPoolExecutor(max_workers=len(ZIP_NAMES)) as pool:
        parts = list(pool.map(_decode_zip, [path / name for name in ZIP_NAMES]))
    merged = {name: images for part in parts for name, images in part.items()}
    names = tuple(sorted(merged))
    images = np.stack([merged[name] for name in names])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(temporary, names=np.array(names), images=images)
    os.replace(temporary, cache_file)
    return OmniglotCharacters(names, images)


def characters_from_examples(examples, alphabet_names) -> OmniglotCharacters:
    """Characters from records in the TFDS `omniglot` layout (`image`, `alphabet`, `alphabet_char_id`).

    TFDS numbers characters from 0 (`characterNN` is `alphabet_char_id + 1`) and names alphabets by index.
    """
    drawings: dict[str, list[np.ndarray]] = {}
    for example in examples:
        name = f"{alphabet_names[int(example['alphabet'])]}/character{int(example['alphabet_char_id']) + 1:02d}"
        drawings.setdefault(name, []).append(preprocess(np.asarray(example["image"])))
    incomplete = {name: len(images) for name, images in drawings.items() if len(images) != DRAWINGS_PER_CHARACTER}
    if incomplete:
        raise ValueError(f"Characters without {DRAWINGS_PER_CHARACTER} drawings: {dict(list(incomplete.items())[:3])}")
    names = tuple(sorted(drawings))
    return OmniglotCharacters(names, np.stack([np.stack(drawings[name]) for name in names]))


def load_characters_from_tfds(tfds_data_dir: str | None = None) -> OmniglotCharacters:
    """All 1623 characters through TensorFlow Datasets (`pip install mssl-tf[tfds]`; downloads unless prepared).

    The Vinyals split files still come from the Omniglot directory (`--data-dir`). TFDS checks the upstream zips'
    registered checksums, so this path needs the original files from the internet; for repacked local zips use
    `load_characters(data_dir)`, which reads the official layout directly.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError("The TFDS source needs tensorflow-datasets: pip install 'mssl-tf[tfds]'") from error
    builder = tfds.builder("omniglot", data_dir=tfds_data_dir)
    builder.download_and_prepare()
    alphabet_names = builder.info.features["alphabet"].names
    examples = (example for split in ("train", "test") for example in tfds.as_numpy(builder.as_dataset(split=split)))
    return characters_from_examples(examples, alphabet_names)


def read_split(split: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, int]]:
    """The Vinyals split as `(character name, rotation in degrees)` pairs, in file order."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"Unknown Omniglot split {split!r}; expected one of {SPLIT_NAMES}")
    lines = (resolve_data_dir(data_dir, require_zips=False) / "splits" / "vinyals" / f"{split}.txt").read_text().split()
    classes = []
    for line in lines:
        alphabet, character, rotation = line.split("/")
        classes.append((f"{alphabet}/{character}", int(rotation.removeprefix("rot"))))
    return classes


def load_split(split: str, data_dir: str | os.PathLike | None = None, source: str = "zips") -> np.ndarray:
    """Images of one Vinyals split: uint8 `[classes, 20, 28, 28]`, each class a character at one rotation.

    Args:
        split: `train`, `val`, `trainval` or `test`.
        data_dir: directory of the zips and split files (see `resolve_data_dir`).
        source: `zips` (the official zips in `data_dir`) or `tfds` (TensorFlow Datasets; splits from `data_dir`).
    """
    if source not in ("zips", "tfds"):
        raise ValueError(f"Unknown Omniglot source {source!r}; expected 'zips' or 'tfds'")
    characters = load_characters_from_tfds() if source == "tfds" else load_characters(data_dir)
    index = {name: position for position, name in enumerate(characters.names)}
    classes = read_split(split, data_dir)
    unknown = [name for name, _ in classes if name not in index]
    if unknown:
        raise ValueError(f"Split {split} names characters absent from the zips, e.g. {unknown[:3]}")
    return np.stack(
        [np.rot90(characters.images[index[name]], k=rotation // 90, axes=(1, 2)) for name, rotation in classes]
    )
