"""Readers of the official dataset files: uint8 images and integer labels, nothing downloaded.

The registry that names datasets (`--dataset`, `DATASETS`, `load_dataset`) is `mssl_tf.data.class_splits`; this
module only reads files. Every reader gives an `ImageDataset`: images uint8 `[N, height, width, channels]` and
labels int64 `[N]` (`UNLABELED` = -1 where the split has no labels, e.g. STL-10's unlabeled split), from the
official files (a `--data-dir` argument or the dataset's environment variable) or, for `cifar10` and `stl10`,
through TFDS' own builders (`load_from_tfds`, `pip install 'mssl-tf[tfds]'`). docs/datasets.md says where to put
the files.

- `omniglot`: the Vinyals split (see `mssl_tf.data.omniglot`), each character at one rotation a class; images
  28x28x1, ink = 255.
- `cifar10` (Krizhevsky 2009): `cifar-10-python.tar.gz` (pickled batches) or `cifar-10-binary.tar.gz`, packed
  or extracted; splits `train` (50,000) and `test` (10,000), 32x32x3.
- `cifar100` (Krizhevsky 2009): `cifar-100-python.tar.gz` (pickles `train`, `test`, `meta`), packed or
  extracted; fine labels; splits `train` (50,000) and `test` (10,000), 32x32x3. CIFAR-FS is made of it.
- `stl10` (Coates et al. 2011): `stl10_binary.tar.gz`, packed or extracted; splits `train` (5,000), `test`
  (8,000) and `unlabeled` (100,000), 96x96x3.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from mssl_tf.data import omniglot
from mssl_tf.data.omniglot import DatasetNotFoundError

UNLABELED = -1
CIFAR10_DIR_ENV = "MSSL_TF_CIFAR10_DIR"
CIFAR100_DIR_ENV = "MSSL_TF_CIFAR100_DIR"
STL10_DIR_ENV = "MSSL_TF_STL10_DIR"
SOURCES = ("files", "tfds")
TFDS_INSTALL_HINT = "pip install 'mssl-tf[tfds]'"

CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
STL10_CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

CIFAR10_PYTHON_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_PYTHON_FOLDER = "cifar-10-batches-py"
CIFAR10_BINARY_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_BINARY_FOLDER = "cifar-10-batches-bin"
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{index}" for index in range(1, 6)), "test": ("test_batch",)}
CIFAR10_SIZE = 32

CIFAR100_PYTHON_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_PYTHON_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("meta", "train", "test")

STL10_ARCHIVE = "stl10_binary.tar.gz"
STL10_FOLDER = "stl10_binary"
STL10_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
               "unlabeled": ("unlabeled_X.bin",)}
STL10_SIZE = 96
_STL10_IMAGES_PER_READ = 1024


@dataclass(frozen=True)
class ImageDataset:
    """Images and labels of one split.

    Attributes:
        images: uint8 `[N, height, width, channels]`.
        labels: int64 `[N]`, class indices into `class_names`, or `UNLABELED` (-1).
        class_names: the name of each class index.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def concatenate(datasets: Iterable[ImageDataset]) -> ImageDataset:
    """The splits one after the other (they must share class names)."""
    datasets = list(datasets)
    if len(datasets) == 1:
        return datasets[0]
    if len({dataset.class_names for dataset in datasets}) != 1:
        raise ValueError("Only splits of one dataset (same class names) can be concatenated")
    return ImageDataset(
        np.concatenate([dataset.images for dataset in datasets]),
        np.concatenate([dataset.labels for dataset in datasets]),
        datasets[0].class_names,
    )


# === Locating the official files ===


@dataclass(frozen=True)
class _Location:
    """Where a dataset's files are: a folder holding them, or a tar archive with them under `folder/`."""

    path: Path
    folder: str | None = None
    binary: bool = False

    @property
    def is_archive(self) -> bool:
        return self.folder is not None


def _default_dir(environment_variable: str, shared_name: str) -> Path | None:
    """`$environment_variable`, or `../shared/data/<shared_name>` when it exists (as for Omniglot)."""
    if os.environ.get(environment_variable):
        return Path(os.environ[environment_variable])
    candidate = Path.cwd() / "../shared/data" / shared_name
    return candidate.resolve() if candidate.is_dir() else None


def _find(
    data_dir: str | os.PathLike | None,
    environment_variable: str,
    shared_name: str,
    dataset: str,
    candidates: Callable[[Path], list[tuple[_Location, tuple[str, ...]]]],
    expected: str,
) -> _Location:
    """The first candidate location whose files exist; otherwise one error naming the variable and the files."""
    root = Path(data_dir).expanduser() if data_dir else _default_dir(environment_variable, shared_name)
    how = f"Pass --data-dir or set ${environment_variable} to a directory holding {expected}"
    if root is None:
        raise DatasetNotFoundError(f"No {dataset} directory given. {how}")
    for location, names in candidates(root):
        if location.is_archive and location.path.is_file():
            return location
        if not location.is_archive and all((location.path / name).is_file() for name in names):
            return location
    raise DatasetNotFoundError(f"{dataset} not found at {root}. {how}")


def _read_members(
    location: _Location, names: tuple[str, ...], parse: Callable[[str, IO[bytes], int], object]
) -> list:
    """`parse(name, binary handle, size)` for each of `names`, in that order, from a folder or a tar archive.

    An archive is read in one streaming pass (gzip cannot seek), so each member is decompressed once.
    """
    if not location.is_archive:
        results = []
        for name in names:
            path = location.path / name
            with open(path, "rb") as handle:
                results.append(parse(name, handle, path.stat().st_size))
        return results
    found = {}
    try:
        with tarfile.open(location.path, "r|*") as archive:
            for member in archive:
                member_path = PurePosixPath(member.name.removeprefix("./"))
                if member.isfile() and str(member_path.parent) == location.folder and member_path.name in names:
                    found[member_path.name] = parse(member_path.name, archive.extractfile(member), member.size)
    except tarfile.TarError as error:
        raise ValueError(f"{location.path} is not a readable tar archive ({error}); re-download it") from error
    missing = [f"{location.folder}/{name}" for name in names if name not in found]
    if missing:
        raise DatasetNotFoundError(f"Archive {location.path} lacks {', '.join(missing)}")
    return [found[name] for name in names]


# === CIFAR-10 ===


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a tampered batch file cannot run code."""

    allowed = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(
                f"Refusing to unpickle {module}.{name}: CIFAR batches hold only numpy arrays and lists"
            )
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_cifar10_python_batch(handle: IO[bytes], name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch (the python version) → (uint8 images `[n, 32, 32, 3]`, int64 labels `[n]`).

    The pickle is a dict with `b"data"`, uint8 `[n, 3072]`: per row the red, green, then blue 32x32 plane,
    each row-major; and `b"labels"`, n integers in 0..9.
    """
    return _read_cifar_pickle(handle, f"CIFAR-10 {name}", b"labels", 10)


def _read_cifar_pickle(handle: IO[bytes], name: str, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The CIFAR-10 and CIFAR-100 python batches: `b"data"` uint8 `[n, 3072]` and integer labels at `label_key`."""
    batch = _ArrayUnpickler(handle, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise ValueError(f"{name}: expected a pickled dict with b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * CIFAR10_SIZE**2 or len(labels) != len(data):
        raise ValueError(f"{name}: data {data.shape} and {len(labels)} labels; expected [n, 3072] and n")
    return _cifar10_images(data), _checked_labels(labels, name, classes)


def read_cifar10_binary_batch(data: bytes, name: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch (`<1 x label><3072 x pixel>` records, pixels as in the python version)."""
    record = 1 + 3 * CIFAR10_SIZE**2
    if len(data) % record:
        raise ValueError(f"CIFAR-10 {name}: {len(data)} bytes is not a whole number of {record}-byte records")
    records = np.frombuffer(data, np.uint8).reshape(-1, record)
    return _cifar10_images(records[:, 1:]), _checked_labels(records[:, 0].astype(np.int64), name, 10)


def _cifar10_images(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.reshape(-1, 3, CIFAR10_SIZE, CIFAR10_SIZE).transpose(0, 2, 3, 1))


def _checked_labels(labels: np.ndarray, name: str, classes: int) -> np.ndarray:
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{name}: labels outside 0..{classes - 1} ({labels.min()}..{labels.max()})")
    return labels


def _cifar10_candidates(split: str) -> Callable[[Path], list[tuple[_Location, tuple[str, ...]]]]:
    pickled = CIFAR10_BATCHES[split]
    binary = tuple(f"{name}.bin" for name in pickled)

    def candidates(root: Path):
        if root.is_file():
            if root.name == CIFAR10_BINARY_ARCHIVE:
                return [(_Location(root, CIFAR10_BINARY_FOLDER, binary=True), ())]
            return [(_Location(root, CIFAR10_PYTHON_FOLDER), ())]
        return [
            (_Location(root / CIFAR10_PYTHON_FOLDER), pickled),
            (_Location(root), pickled),
            (_Location(root / CIFAR10_PYTHON_ARCHIVE, CIFAR10_PYTHON_FOLDER), ()),
            (_Location(root / CIFAR10_BINARY_FOLDER, binary=True), binary),
            (_Location(root, binary=True), binary),
            (_Location(root / CIFAR10_BINARY_ARCHIVE, CIFAR10_BINARY_FOLDER, binary=True), ()),
        ]

    return candidates


def load_cifar10(split: str = "train", data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """CIFAR-10 from the official files: `train` (data_batch_1..5, in order) or `test` (test_batch).

    Args:
        split: `train` or `test`.
        data_dir: a directory holding `cifar-10-python.tar.gz` or its extracted `cifar-10-batches-py/` (or those
            batch files directly), or the binary version `cifar-10-binary.tar.gz` / `cifar-10-batches-bin/`; or
            the path of one of those archives. Default: `$MSSL_TF_CIFAR10_DIR`.

    Returns:
        uint8 images `[N, 32, 32, 3]` and labels 0..9, in file order.

    Raises:
        DatasetNotFoundError: no such files; the message names the variable and the expected files.
    """
    if split not in CIFAR10_BATCHES:
        raise ValueError(f"Unknown CIFAR-10 split {split!r}; expected one of {tuple(CIFAR10_BATCHES)}")
    names = CIFAR10_BATCHES[split]
    expected = (
        f"{CIFAR10_PYTHON_ARCHIVE} or its extracted {CIFAR10_PYTHON_FOLDER}/ ({', '.join(names)}), or "
        f"{CIFAR10_BINARY_ARCHIVE} or {CIFAR10_BINARY_FOLDER}/ ({', '.join(name + '.bin' for name in names)}), "
        "from https://www.cs.toronto.edu/~kriz/cifar.html (docs/datasets.md)"
    )
    location = _find(data_dir, CIFAR10_DIR_ENV, "cifar10", "CIFAR-10", _cifar10_candidates(split), expected)
    member_names = tuple(f"{name}.bin" for name in names) if location.binary else names

    def parse(name, handle, _size):
        if location.binary:
            return read_cifar10_binary_batch(handle.read(), name)
        return read_cifar10_python_batch(handle, name)

    batches = _read_members(location, member_names, parse)
    return ImageDataset(
        np.concatenate([images for images, _ in batches]),
        np.concatenate([labels for _, labels in batches]),
        CIFAR10_CLASS_NAMES,
    )


# === CIFAR-100 ===


def read_cifar100_python(handle: IO[bytes], name: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100's pickled `train` or `test` → (uint8 images `[n, 32, 32, 3]`, int64 fine labels `[n]`).

    The pickle is a dict with `b"data"` (uint8 `[n, 3072]`, rows as in CIFAR-10), `b"fine_labels"` (0..99),
    `b"coarse_labels"` (0..19) and `b"filenames"`.
    """
    return _read_cifar_pickle(handle, f"CIFAR-100 {name}", b"fine_labels", 100)


def read_cifar100_meta(handle: IO[bytes]) -> tuple[str, ...]:
    """CIFAR-100's pickled `meta` → the 100 fine label names, in label order."""
    meta = _ArrayUnpickler(handle, encoding="bytes").load()
    if not isinstance(meta, dict) or b"fine_label_names" not in meta:
        raise ValueError("CIFAR-100 meta: expected a pickled dict with b'fine_label_names'")
    names = tuple(name.decode() if isinstance(name, bytes) else str(name) for name in meta[b"fine_label_names"])
    if len(names) != 100:
        raise ValueError(f"CIFAR-100 meta: {len(names)} fine label names, expected 100")
    return names


def _cifar100_candidates(root: Path):
    if root.is_file():
        return [(_Location(root, CIFAR100_PYTHON_FOLDER), ())]
    return [
        (_Location(root / CIFAR100_PYTHON_FOLDER), CIFAR100_FILES),
        (_Location(root), CIFAR100_FILES),
        (_Location(root / CIFAR100_PYTHON_ARCHIVE, CIFAR100_PYTHON_FOLDER), ()),
    ]


def load_cifar100(
    splits: tuple[str, ...] = ("train",), data_dir: str | os.PathLike | None = None
) -> dict[str, ImageDataset]:
    """CIFAR-100 (python version) from the official files, fine labels: `{split: ImageDataset}` for `splits`.

    Args:
        splits: some of `train`, `test`; all are read in one pass over an archive.
        data_dir: a directory holding `cifar-100-python.tar.gz` or its extracted `cifar-100-python/` (`train`,
            `test`, `meta`), or those files directly, or the archive's path. Default: `$MSSL_TF_CIFAR100_DIR`.

    Raises:
        DatasetNotFoundError: no such files; the message names the variable and the expected files.
    """
    unknown = [split for split in splits if split not in ("train", "test")]
    if unknown:
        raise ValueError(f"Unknown CIFAR-100 split {unknown[0]!r}; expected train or test")
    expected = (f"{CIFAR100_PYTHON_ARCHIVE} or its extracted {CIFAR100_PYTHON_FOLDER}/ (meta, train, test), the "
                "python version from https://www.cs.toronto.edu/~kriz/cifar.html (docs/datasets.md)")
    location = _find(data_dir, CIFAR100_DIR_ENV, "cifar100", "CIFAR-100", _cifar100_candidates, expected)

    def parse(name, handle, _size):
        return read_cifar100_meta(handle) if name == "meta" else read_cifar100_python(handle, name)

    names, *parts = _read_members(location, ("meta", *splits), parse)
    return {split: ImageDataset(images, labels, names) for split, (images, labels) in zip(splits, parts)}


# === STL-10 ===


def read_stl10_images(handle: IO[bytes], size: int, name: str = "images") -> np.ndarray:
    """STL-10 `*_X.bin` → uint8 `[n, 96, 96, 3]`.

    Each image is 3 x 96 x 96 bytes: the red, green, then blue plane, each plane column-major (the first 96
    bytes are the left column, top to bottom). Read in chunks so the output is the only full-size array.
    """
    image_bytes = 3 * STL10_SIZE**2
    if size % image_bytes:
        raise ValueError(f"STL-10 {name}: {size} bytes is not a whole number of {image_bytes}-byte images")
    images = np.empty([size // image_bytes, STL10_SIZE, STL10_SIZE, 3], np.uint8)
    for start in range(0, len(images), _STL10_IMAGES_PER_READ):
        count = min(_STL10_IMAGES_PER_READ, len(images) - start)
        chunk = handle.read(count * image_bytes)
        if len(chunk) != count * image_bytes:
            raise ValueError(f"STL-10 {name}: file ended early (image {start + len(chunk) // image_bytes})")
        # [image, channel, column, row] → [image, row, column, channel]
        images[start : start + count] = np.frombuffer(chunk, np.uint8).reshape(
            count, 3, STL10_SIZE, STL10_SIZE
        ).transpose(0, 3, 2, 1)
    return images


def read_stl10_labels(data: bytes, name: str = "labels") -> np.ndarray:
    """STL-10 `*_y.bin` (one byte per image, classes 1..10) → int64 labels 0..9."""
    labels = np.frombuffer(data, np.uint8).astype(np.int64) - 1
    return _checked_labels(labels, f"STL-10 {name} (stored 1..10)", 10)


def _stl10_candidates(split: str) -> Callable[[Path], list[tuple[_Location, tuple[str, ...]]]]:
    def candidates(root: Path):
        if root.is_file():
            return [(_Location(root, STL10_FOLDER), ())]
        return [
            (_Location(root / STL10_FOLDER), STL10_FILES[split]),
            (_Location(root), STL10_FILES[split]),
            (_Location(root / STL10_ARCHIVE, STL10_FOLDER), ()),
        ]

    return candidates


def load_stl10(split: str = "train", data_dir: str | os.PathLike | None = None) -> ImageDataset:
    """STL-10 from the official binary files: `train`, `test` or `unlabeled` (labels `UNLABELED`).

    Args:
        split: `train`, `test` or `unlabeled`.
        data_dir: a directory holding `stl10_binary.tar.gz` or its extracted `stl10_binary/` (or the `*.bin`
            files directly), or the archive's path. Default: `$MSSL_TF_STL10_DIR`.

    Returns:
        uint8 images `[N, 96, 96, 3]` and labels 0..9 (-1 for `unlabeled`), in file order.

    Raises:
        DatasetNotFoundError: no such files; the message names the variable and the expected files.
    """
    if split not in STL10_FILES:
        raise ValueError(f"Unknown STL-10 split {split!r}; expected one of {tuple(STL10_FILES)}")
    names = STL10_FILES[split]
    expected = (
        f"{STL10_ARCHIVE} or its extracted {STL10_FOLDER}/ ({', '.join(names)}), from "
        "https://cs.stanford.edu/~acoates/stl10/ (docs/datasets.md)"
    )
    location = _find(data_dir, STL10_DIR_ENV, "stl10", "STL-10", _stl10_candidates(split), expected)

    def parse(name, handle, size):
        return read_stl10_images(handle, size, name) if name.endswith("_X.bin") else read_stl10_labels(
            handle.read(), name
        )

    images, *labels = _read_members(location, names, parse)
    labels = labels[0] if labels else np.full(len(images), UNLABELED, np.int64)
    if len(labels) != len(images):
        raise ValueError(f"STL-10 {split}: {len(images)} images but {len(labels)} labels")
    return ImageDataset(images, labels, STL10_CLASS_NAMES)


# === TensorFlow Datasets ===


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(f"The TFDS source needs tensorflow-datasets: {TFDS_INSTALL_HINT}") from error
    return tfds


def dataset_from_tfds_batches(batches: Iterable[Mapping[str, np.ndarray]], class_names) -> ImageDataset:
    """Batches of TFDS records (`image` uint8 `[n, h, w, c]`, `label` int `[n]`, -1 = none) → `ImageDataset`."""
    images, labels = [], []
    for batch in batches:
        images.append(np.asarray(batch["image"], dtype=np.uint8))
        labels.append(np.asarray(batch["label"], dtype=np.int64))
    if not images:
        raise ValueError("The TFDS split holds no records")
    labels = np.concatenate(labels)
    if labels.min() < UNLABELED or labels.max() >= len(class_names):
        raise ValueError(f"TFDS labels outside {UNLABELED}..{len(class_names) - 1}")
    return ImageDataset(np.concatenate(images), labels, tuple(class_names))


def load_from_tfds(
    name: str,
    split: str = "train",
    tfds_data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    download: bool = True,
    batch_size: int = 1024,
) -> ImageDataset:
    """A split of `cifar10` or `stl10` through TensorFlow Datasets (`pip install 'mssl-tf[tfds]'`).

    TFDS prepares the dataset once under `tfds_data_dir` (default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`)
    and verifies the archive against its registered checksum. Without internet, put the official archive TFDS
    expects (`cifar-10-binary.tar.gz` — the binary version — or `stl10_binary.tar.gz`) in `manual_dir`
    (default `<tfds_data_dir>/downloads/manual`). TFDS shuffles records when preparing, so the order differs
    from the files' order; the set of records is the same.

    Args:
        name: `cifar10` or `stl10`.
        split: `train`, `test`, or for STL-10 `unlabeled` (TFDS calls it `unlabelled`).
        tfds_data_dir: TFDS data directory.
        manual_dir: directory holding the official archive, used instead of downloading.
        download: whether TFDS may download when the dataset is neither prepared nor in `manual_dir`.
        batch_size: records per read.

    Returns:
        uint8 images and labels (-1 for STL-10 `unlabeled`).
    """
    if name not in _TFDS:
        raise ValueError(f"No TFDS source for {name!r}; TFDS sources: {sorted(_TFDS)}")
    archive, splits = _TFDS[name]
    if split not in splits:
        raise ValueError(f"Unknown {name} split {split!r}; expected one of {tuple(splits)}")
    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=tfds_data_dir)
    if not builder.is_prepared():
        manual = Path(manual_dir) if manual_dir else Path(builder.data_dir).parents[1] / "downloads" / "manual"
        if not download and not (manual / archive).is_file():
            raise DatasetNotFoundError(
                f"TFDS {name} is not prepared under {builder.data_dir} and {manual / archive} does not exist. "
                f"Put the official {archive} in {manual} (or pass manual_dir), or allow downloading."
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
        )
    dataset = builder.as_dataset(split=splits[split], batch_size=batch_size, shuffle_files=False)
    return dataset_from_tfds_batches(tfds.as_numpy(dataset), builder.info.features["label"].names)


_TFDS = {
    "cifar10": (CIFAR10_BINARY_ARCHIVE, {"train": "train", "test": "test"}),
    "stl10": (STL10_ARCHIVE, {"train": "train", "test": "test", "unlabeled": "unlabelled"}),
}


# === Omniglot as flat images ===


def load_omniglot(
    split: str = "train", data_dir: str | os.PathLike | None = None, source: str = "files"
) -> ImageDataset:
    """A Vinyals split of Omniglot as flat images `[classes * 20, 28, 28, 1]`, labels the class index.

    Class `i` is `class_names[i]` = `<Alphabet>/<characterNN>/rot<degrees>`, its 20 drawings consecutive.
    """
    classes = omniglot.load_split(split, data_dir, source="zips" if source == "files" else "tfds")
    names = tuple(f"{name}/rot{rotation:03d}" for name, rotation in omniglot.read_split(split, data_dir))
    images = classes.reshape(-1, *classes.shape[2:], 1)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), classes.shape[1])
    return ImageDataset(images, labels, names)
