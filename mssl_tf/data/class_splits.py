"""The dataset registry every command takes (`--dataset`): `DATASETS`, a name → `DatasetSpec`.

A split is read as class arrays, uint8 `[classes, images per class, H, W]` (Omniglot) or `[classes, images per
class, H, W, C]`, the layout the episode, view and unsupervised-task pipelines and the frozen-encoder protocols read.

- `omniglot`: the Vinyals splits (`train`, `val`, `trainval`, `test`) from the official zips or TFDS, 28x28x1.
- `cifar-fs`: CIFAR-100's 600 images per class (official train and test images pooled) split by class 64 / 16 / 20
  as in Bertinetto et al. 2019 (R2D2); the class lists are `splits/cifar_fs.json`. Class-disjoint: a few-shot
  benchmark.
- `cifar10`: CIFAR-10's 10 classes. Too few for class-disjoint splits, so every split holds all 10 classes: `train`
  the first 4,500 official training images of each class, `val` the last 500, `trainval` all 5,000, `test` the
  1,000 official test images. Few-shot episodes on it share classes across splits: it is a pretraining and
  linear-probe dataset, not a few-shot benchmark.
- `stl10`: STL-10's labeled images as `cifar10` (`train` 450 / `val` 50 / `trainval` 500 per class of the official
  training images, `test` the 800 official test images per class), and its 100,000 unlabeled images as one
  pseudo-class: `unlabeled` is `[1, 100000, 96, 96, 3]`, `train+unlabeled` `[1, 105000, 96, 96, 3]`. Those two
  splits carry no labels, so only methods trained on views or on unsupervised tasks train on them.
- `tfds:NAME`: a TensorFlow Datasets dataset already prepared in a local data directory (`--data-dir`, else
  TFDS' default), never downloaded; its image and label features, split by record as `cifar10` (classes shared).
- `imagefolder:PATH`: any folder of class folders (`mssl_tf.data.image_folder`), a seeded class partition.
- `arrays:NAME`: class arrays a Python program registered with `register_arrays(NAME, {"train": ..., ...})`.

`DatasetOptions.image_size` / `channels` convert any of them but Omniglot the way folder images are converted
(Pillow grey ↔ RGB, shorter side resized, centre crop); None keeps the dataset's own. docs/datasets.md says where
each dataset's files go.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mssl_tf.data import omniglot, sources, wordnet
from mssl_tf.data.image_folder import FolderSettings, convert_images, load_image_folder
from mssl_tf.data.modality import is_text
from mssl_tf.data.omniglot import DatasetNotFoundError, load_split
from mssl_tf.data.sources import ImageDataset, concatenate

CIFAR_FS_SPLITS_FILE = Path(__file__).parent / "splits" / "cifar_fs.json"
HELD_OUT_FRACTION = 0.1  # datasets without class-disjoint splits: the last tenth of each class's training images
UNLABELED_CLASS = "unlabeled"
_ARRAYS: dict[str, dict[str, np.ndarray]] = {}


@dataclass(frozen=True)
class DatasetOptions:
    """How a dataset is read: the image size and channels it is converted to, a folder's class filter and seed."""

    image_size: int | None = None  # None: the dataset's own (Omniglot 28, CIFAR 32, STL-10 96, folders 84)
    channels: int | None = None  # None: the dataset's own (Omniglot 1, folders 3)
    min_images: int = 20  # folders and TFDS: classes need this many images
    seed: int = 0

    def folder_settings(self) -> FolderSettings:
        return FolderSettings(image_size=self.image_size or 84, channels=self.channels or 3,
                              min_images=self.min_images, images_per_class=self.min_images, seed=self.seed)


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of `DATASETS`.

    Attributes:
        name: registry name (`--dataset NAME`, or `NAME:ARGUMENT` when `argument` is set).
        summary: one line for `--help` and errors.
        splits: the split names `load_class_split` takes.
        load: `(argument, split, data_dir, source, options) → uint8 class arrays` in the dataset's own size
            (`load_class_split` converts to `options`).
        image_size: the images' own square size; None when it depends on the data (folders, arrays, TFDS).
        channels: the images' own channels; None when it depends on the data.
        argument: what follows `NAME:` (`PATH`, `NAME`), empty when nothing does.
        split_note: how records name a split: `test (<split_note>)`.
        shared_classes: every split holds the same classes (no class-disjoint few-shot evaluation).
        unlabeled_splits: splits that are one pseudo-class of unlabeled images.
        data_dir_env: the environment variable used when `--data-dir` is not given.
        homepage: where the official files come from.
        files: the flat-image readers of `load_dataset` (official split names, labels -1 where none).
        describe: `(argument, options) → dict` recorded in `train.json`.
        text: the examples are sentences (str `[classes, per class]`), not images.
    """

    name: str
    summary: str
    splits: tuple[str, ...]
    load: Callable[..., np.ndarray] = field(repr=False)
    image_size: int | None = None
    channels: int | None = None
    argument: str = ""
    split_note: str = ""
    shared_classes: bool = False
    unlabeled_splits: tuple[str, ...] = ()
    data_dir_env: str | None = None
    homepage: str = ""
    files: FlatSource | None = field(default=None, repr=False)
    describe: Callable[..., dict] | None = field(default=None, repr=False)
    text: bool = False

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """`(height, width, channels)` of the dataset's own images, when fixed."""
        return None if self.image_size is None else (self.image_size, self.image_size, self.channels)

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


@dataclass(frozen=True)
class FlatSource:
    """Flat images of a dataset's official splits (`load_dataset`): `(split, data_dir) → ImageDataset` from the
    files and `(split, data_dir, tfds_data_dir, manual_dir) → ImageDataset` through TFDS' own builder."""

    splits: tuple[str, ...]
    load_files: Callable[..., ImageDataset]
    load_tfds: Callable[..., ImageDataset]


# === Shared helpers ===


def class_arrays(images: np.ndarray, labels: np.ndarray, classes: int, what: str, min_images: int = 1) -> np.ndarray:
    """Flat labelled images → `[kept classes, n, H, W, C]`: each class's images in file order, classes with fewer
    than `min_images` dropped, every kept class cut to the smallest kept count (official CIFAR and STL-10 splits
    are balanced, so nothing is cut)."""
    members = [np.flatnonzero(labels == label) for label in range(classes)]
    kept = [indices for indices in members if len(indices) >= max(min_images, 1)]
    if not kept:
        raise ValueError(f"{what}: no class has {max(min_images, 1)} or more images (lower --min-images)")
    count = min(len(indices) for indices in kept)
    return np.stack([images[indices[:count]] for indices in kept])


def held_out(classes: np.ndarray, split: str, what: str) -> np.ndarray:
    """`train` / `val` / `trainval` of class arrays made from training images: `val` is the last tenth of each
    class (at least one image), `train` the rest, `trainval` all."""
    count = classes.shape[1]
    validation = max(1, round(HELD_OUT_FRACTION * count))
    if count - validation < 1:
        raise ValueError(f"{what}: {count} images per class cannot be cut into train and val")
    return {"train": classes[:, : count - validation], "val": classes[:, count - validation :],
            "trainval": classes}[split]


def _check_source(name: str, source: str) -> None:
    if source not in ("zips", "files"):
        raise ValueError(f"--source {source} reads Omniglot only; {name} is read from its official files in "
                         "--data-dir (for TFDS' copy use --dataset tfds:NAME --data-dir TFDS_DATA_DIR)")


def _key(data_dir, environment_variable: str) -> tuple[str, str]:
    return str(Path(data_dir).expanduser().resolve()) if data_dir else "", os.environ.get(environment_variable, "")


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(f"{spec.name} splits are {', '.join(spec.splits)}, not {split!r}")


# === omniglot ===


def _load_omniglot(argument, split, data_dir, source, options):
    if (options.image_size or 28) != 28 or (options.channels or 1) != 1:
        raise ValueError("omniglot is read at 28x28x1; drop --image-size/--channels or use another dataset")
    return load_split(split, data_dir, source)


def _omniglot_tfds(split, data_dir=None, tfds_data_dir=None, manual_dir=None):
    if tfds_data_dir or manual_dir:
        raise ValueError("The Omniglot TFDS source reads TFDS' default data directory: drop tfds_data_dir/manual_dir")
    return sources.load_omniglot(split, data_dir, source="tfds")


# === cifar10 ===


@functools.lru_cache(maxsize=2)
def _cifar10_classes(split: str, key: tuple[str, str]) -> np.ndarray:
    dataset = sources.load_cifar10(split, key[0] or None)
    return class_arrays(dataset.images, dataset.labels, 10, f"CIFAR-10 {split}")


def _load_cifar10(argument, split, data_dir, source, options):
    _check_source("cifar10", source)
    key = _key(data_dir, sources.CIFAR10_DIR_ENV)
    if split == "test":
        return _cifar10_classes("test", key)
    return held_out(_cifar10_classes("train", key), split, "CIFAR-10 train")


def _describe_held_out(name: str) -> Callable[..., dict]:
    def describe_dataset(argument, options):
        return {"splits": {"train": "each class's official training images but the last tenth",
                           "val": "the last tenth of each class's official training images",
                           "trainval": "all official training images", "test": "the official test images"},
                "classes_shared_across_splits": True,
                "note": f"{name}'s splits share their classes: few-shot episodes on it are not class-disjoint"}
    return describe_dataset


# === cifar-fs ===


def cifar_fs_classes() -> dict[str, list[str]]:
    """The CIFAR-FS class lists (Bertinetto et al. 2019) from `splits/cifar_fs.json`: `{"train": 64 names, "val": 16,
    "test": 20}`, CIFAR-100 fine label names."""
    recorded = json.loads(CIFAR_FS_SPLITS_FILE.read_text())
    return {split: list(recorded[split]) for split in ("train", "val", "test")}


def check_partition(lists: dict[str, list[str]], fine_names) -> None:
    """Raises ValueError unless the split lists are disjoint, 64 / 16 / 20 long and together the 100 fine names."""
    fine = set(fine_names)
    every = [name for names in lists.values() for name in names]
    problems = []
    if [len(lists[split]) for split in ("train", "val", "test")] != [64, 16, 20]:
        problems.append(f"split sizes {[len(names) for names in lists.values()]}, expected 64 / 16 / 20")
    if len(set(every)) != len(every):
        problems.append("a class is in two splits")
    if set(every) - fine:
        problems.append(f"not CIFAR-100 fine labels: {sorted(set(every) - fine)}")
    if fine - set(every):
        problems.append(f"fine labels in no split: {sorted(fine - set(every))}")
    if problems:
        raise ValueError(f"The CIFAR-FS class lists ({CIFAR_FS_SPLITS_FILE}) are not a partition of this CIFAR-100's "
                         f"fine label names: {'; '.join(problems)}. Use the official cifar-100-python files.")


@functools.lru_cache(maxsize=1)
def _cifar_fs_pool(key: tuple[str, str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """CIFAR-100's train and test images pooled per fine class: `[100, 600, 32, 32, 3]` and the fine names."""
    parts = sources.load_cifar100(("train", "test"), key[0] or None)
    pooled = concatenate(parts.values())
    return class_arrays(pooled.images, pooled.labels, 100, "CIFAR-100"), pooled.class_names


def _load_cifar_fs(argument, split, data_dir, source, options):
    _check_source("cifar-fs", source)
    pool, names = _cifar_fs_pool(_key(data_dir, sources.CIFAR100_DIR_ENV))
    lists = cifar_fs_classes()
    check_partition(lists, names)
    chosen = lists["train"] + lists["val"] if split == "trainval" else lists[split]
    return pool[[names.index(name) for name in chosen]]


def _describe_cifar_fs(argument, options):
    return {"splits": {split: len(names) for split, names in cifar_fs_classes().items()}, "images_per_class": 600,
            "class_lists": "mssl_tf/data/splits/cifar_fs.json (Bertinetto et al. 2019, as torchmeta ships them)",
            "classes_shared_across_splits": False}


# === stl10 ===


def _load_stl10(argument, split, data_dir, source, options):
    _check_source("stl10", source)
    if split in ("unlabeled", "train+unlabeled"):
        parts = [sources.load_stl10(part, data_dir).images for part in split.split("+")]
        return np.concatenate(parts)[np.newaxis]  # one pseudo-class: the labels are not used
    if split == "test":
        dataset = sources.load_stl10("test", data_dir)
        return class_arrays(dataset.images, dataset.labels, 10, "STL-10 test")
    dataset = sources.load_stl10("train", data_dir)
    return held_out(class_arrays(dataset.images, dataset.labels, 10, "STL-10 train"), split, "STL-10 train")


def _describe_stl10(argument, options):
    return {**_describe_held_out("stl10")(argument, options),
            "unlabeled": "unlabeled and train+unlabeled are one pseudo-class (labels unused)"}


# === tfds:NAME ===


def _tfds_builder(name: str, data_dir):
    tfds = sources._import_tfds()
    try:
        builder = tfds.builder(name, data_dir=str(Path(data_dir).expanduser()) if data_dir else None)
    except Exception as error:  # TFDS raises its own DatasetNotFoundError, or errors of a bad name or version
        raise DatasetNotFoundError(
            f"tfds:{name}: TFDS finds no such dataset ({type(error).__name__}: {str(error).splitlines()[0]}). Give "
            "--data-dir the TFDS data directory that holds NAME/VERSION/ (prepared with `tfds build` or "
            "builder.download_and_prepare())") from None
    if not builder.is_prepared():
        raise DatasetNotFoundError(
            f"tfds:{name} is not prepared under {builder.data_dir}; nothing is downloaded here. Prepare it once "
            f"(`tfds build {name} --data_dir DIR`) and pass --data-dir DIR")
    return builder


def tfds_features(builder) -> tuple[str, str]:
    """The names of a TFDS dataset's image feature and label feature (`image` / `label` when present)."""
    tfds = sources._import_tfds()
    features = builder.info.features
    images = [key for key, feature in features.items() if isinstance(feature, tfds.features.Image)]
    labels = [key for key, feature in features.items() if isinstance(feature, tfds.features.ClassLabel)]
    image = "image" if "image" in images else images[0] if len(images) == 1 else None
    label = "label" if "label" in labels else labels[0] if len(labels) == 1 else None
    if image is None or label is None:
        raise ValueError(f"tfds:{builder.name} needs one image feature and one class-label feature (or ones named "
                         f"image and label); it has images {images} and labels {labels}")
    return image, label


def tfds_split_names(builder, split: str) -> tuple[str, bool]:
    """(the TFDS split read for `split`, whether `split` is cut from it as `held_out`)."""
    available = set(builder.info.splits)
    if split == "val":
        return ("validation", False) if "validation" in available else ("train", True)
    if split in ("train", "trainval"):
        held = "validation" not in available
        if split == "trainval" and not held:
            return "train+validation", False
        return "train", held
    return split, False  # test or any TFDS split name, e.g. "test" or "train[:10%]"


def _load_tfds(argument, split, data_dir, source, options):
    _check_source(f"tfds:{argument}", source)
    builder = _tfds_builder(argument, data_dir)
    tfds = sources._import_tfds()
    image_key, label_key = tfds_features(builder)
    tfds_split, cut = tfds_split_names(builder, split)
    size = options.image_size
    images, labels = [], []
    for record in tfds.as_numpy(builder.as_dataset(split=tfds_split, shuffle_files=False)):
        image = np.asarray(record[image_key], np.uint8)
        images.append(image)
        labels.append(int(record[label_key]))
    if not images:
        raise ValueError(f"tfds:{argument} split {tfds_split} holds no records")
    shapes = {image.shape for image in images}
    if len(shapes) > 1 or size:  # sizes differ: every image converted as folder images are (default 84)
        channels = options.channels or (3 if any(shape[-1] == 3 for shape in shapes) else 1)
        images = [convert_images(image, size or 84, channels) for image in images]
    stacked = np.stack(images)
    classes = class_arrays(stacked, np.asarray(labels), builder.info.features[label_key].num_classes,
                           f"tfds:{argument} {tfds_split}", options.min_images)
    return held_out(classes, split, f"tfds:{argument} train") if cut else classes


def _describe_tfds(argument, options):
    return {"tfds_name": argument, "splits": {"val": "TFDS validation, else the last tenth of each class of train",
                                              "test": "TFDS test"},
            "classes_shared_across_splits": True,
            "note": "records are grouped by label; classes with fewer than min_images records are dropped and every "
                    "kept class is cut to the smallest kept count"}


# === wordnet ===


@functools.lru_cache(maxsize=2)
def _wordnet_synsets(directory: str) -> dict:
    return wordnet.read_synsets(directory)


def _load_wordnet(argument, split, data_dir, source, options):
    _check_source("wordnet", source)
    if options.image_size or options.channels:
        raise ValueError("wordnet holds sentences: drop --image-size/--channels")
    synsets = _wordnet_synsets(str(wordnet.find_directory(data_dir)))
    if split == "unlabeled":
        return wordnet.unlabeled_texts(synsets, options.min_images, options.seed)[np.newaxis]
    return wordnet.hypernym_classes(synsets, split, options.min_images, options.seed).texts


def _describe_wordnet(argument, options):
    return {"construction": "mssl_tf.data.wordnet: hypernym synsets of data.noun and data.verb with at least "
                            f"{options.min_images} single-hypernym hyponyms; each hyponym's definition an example; "
                            "classes split by sha256 of the synset (60/20/20)",
            "min_examples": options.min_images, "seed": options.seed}


# === imagefolder:PATH and arrays:NAME ===


def _load_imagefolder(argument, split, data_dir, source, options):
    splits = load_image_folder(argument, options.folder_settings())
    if split not in splits.images:
        raise ValueError(f"imagefolder splits are {sorted(splits.images)}, not {split!r}")
    return splits.images[split]


def _describe_imagefolder(argument, options):
    return load_image_folder(argument, options.folder_settings()).summary()


def register_arrays(name: str, splits: dict[str, np.ndarray]) -> str:
    """Makes class arrays a dataset: uint8 images `[classes, per class, H, W(, C)]` or sentences `[classes, per
    class]` (str) per split name; returns `arrays:NAME`."""
    checked = {}
    for split, images in splits.items():
        images = np.asarray(images, dtype=object) if is_text(np.asarray(images)) else np.asarray(images)
        sentences = images.dtype == object and images.ndim == 2
        if not sentences and (images.dtype != np.uint8 or images.ndim not in (4, 5)):
            raise ValueError(f"split {split!r} must be uint8 [classes, images per class, H, W(, C)] or sentences "
                             f"[classes, sentences per class], got {images.dtype} {images.shape}")
        checked[split] = images
    _ARRAYS[name] = checked
    return f"arrays:{name}"


def _registered(argument: str) -> dict[str, np.ndarray]:
    if argument not in _ARRAYS:
        raise ValueError(f"no arrays registered as {argument!r} in this process (mssl_tf.data.register_arrays)")
    return _ARRAYS[argument]


def _load_arrays(argument, split, data_dir, source, options):
    arrays = _registered(argument)
    if split not in arrays:
        raise ValueError(f"arrays:{argument} has splits {sorted(arrays)}, not {split!r}")
    return arrays[split]


def _describe_arrays(argument, options):
    return {"shapes": {split: list(images.shape) for split, images in _registered(argument).items()}}


# === The registry ===


def _tfds_files(name: str) -> FlatSource:
    def load(split, data_dir=None, tfds_data_dir=None, manual_dir=None):
        return sources.load_from_tfds(name, split, tfds_data_dir=tfds_data_dir, manual_dir=manual_dir)

    loaders = {"cifar10": sources.load_cifar10, "stl10": sources.load_stl10}
    splits = {"cifar10": tuple(sources.CIFAR10_BATCHES), "stl10": tuple(sources.STL10_FILES)}
    return FlatSource(splits[name], loaders[name], load)


HELD_OUT_SPLITS = ("train", "val", "trainval", "test")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "omniglot", "Omniglot, the Vinyals class splits (official zips or TFDS)", omniglot.SPLIT_NAMES,
            _load_omniglot, 28, 1, split_note="Vinyals", data_dir_env=omniglot.DATA_DIR_ENV,
            homepage="https://github.com/brendenlake/omniglot",
            files=FlatSource(omniglot.SPLIT_NAMES, sources.load_omniglot, _omniglot_tfds),
        ),
        DatasetSpec(
            "cifar-fs", "CIFAR-FS: CIFAR-100 split by class 64/16/20 (Bertinetto et al. 2019)",
            ("train", "val", "trainval", "test"), _load_cifar_fs, 32, 3,
            split_note="CIFAR-FS, Bertinetto et al. 2019", data_dir_env=sources.CIFAR100_DIR_ENV,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html", describe=_describe_cifar_fs,
        ),
        DatasetSpec(
            "cifar10", "CIFAR-10 (10 classes shared by every split: pretraining and linear probes)", HELD_OUT_SPLITS,
            _load_cifar10, 32, 3, split_note="CIFAR-10 images, classes shared across splits", shared_classes=True,
            data_dir_env=sources.CIFAR10_DIR_ENV, homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            files=_tfds_files("cifar10"), describe=_describe_held_out("cifar10"),
        ),
        DatasetSpec(
            "stl10", "STL-10 (labeled splits share their 10 classes; unlabeled is one pseudo-class)",
            (*HELD_OUT_SPLITS, "unlabeled", "train+unlabeled"), _load_stl10, 96, 3,
            split_note="STL-10 images, classes shared across splits", shared_classes=True,
            unlabeled_splits=("unlabeled", "train+unlabeled"), data_dir_env=sources.STL10_DIR_ENV,
            homepage="https://cs.stanford.edu/~acoates/stl10/", files=_tfds_files("stl10"), describe=_describe_stl10,
        ),
        DatasetSpec(
            "tfds", "a TensorFlow Datasets dataset prepared in --data-dir (never downloaded)", HELD_OUT_SPLITS,
            _load_tfds, argument="NAME", split_note="TFDS records, classes shared across splits", shared_classes=True,
            data_dir_env="TFDS_DATA_DIR", homepage="https://www.tensorflow.org/datasets", describe=_describe_tfds,
        ),
        DatasetSpec(
            "imagefolder", "a folder of class folders, a seeded 64/16/20 class partition", ("train", "val", "test"),
            _load_imagefolder, argument="PATH", split_note="seeded class partition", describe=_describe_imagefolder,
        ),
        DatasetSpec(
            "wordnet", "WordNet 3.0 hypernyms as sentence classes (their hyponyms' definitions), text",
            ("train", "val", "trainval", "test", "unlabeled"), _load_wordnet,
            split_note="WordNet 3.0 hypernym classes, sha256 partition", unlabeled_splits=("unlabeled",),
            data_dir_env=wordnet.WORDNET_DIR_ENV, homepage="https://wordnet.princeton.edu",
            describe=_describe_wordnet, text=True,
        ),
        DatasetSpec(
            "arrays", "class arrays registered from Python (mssl_tf.data.register_arrays)", (), _load_arrays,
            argument="NAME", split_note="registered arrays", describe=_describe_arrays,
        ),
    )
}
KINDS = tuple(DATASETS)


def registry_help() -> str:
    """The registry in one line per dataset, for `--help` and errors."""
    return "; ".join(f"{spec.usage}: {spec.summary}" for spec in DATASETS.values())


def parse(dataset: str) -> tuple[str, str]:
    """`"imagefolder:/data/birds"` → `("imagefolder", "/data/birds")`; `"cifar-fs"` → `("cifar-fs", "")`."""
    kind, _, argument = dataset.partition(":")
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; registered: {registry_help()}")
    spec = DATASETS[kind]
    if spec.argument and not argument:
        raise ValueError(f"--dataset {kind} needs its argument: {spec.usage}")
    if argument and not spec.argument:
        raise ValueError(f"--dataset {kind} takes no argument (got {dataset!r})")
    return kind, argument


def spec_of(dataset: str) -> DatasetSpec:
    return DATASETS[parse(dataset)[0]]


def load_class_split(dataset: str, split: str, data_dir=None, source: str = "zips",
                     options: DatasetOptions = DatasetOptions()) -> np.ndarray:
    """One split of a registered dataset as uint8 class arrays, converted to `options.image_size`/`channels`.

    Args:
        dataset: a registry name, `NAME:ARGUMENT` for `tfds`, `imagefolder`, `arrays`.
        split: one of the dataset's `splits` (`tfds:` also takes any TFDS split name).
        data_dir: the dataset's files (default: its environment variable); for `tfds:` the TFDS data directory.
        source: `zips` or `tfds` for Omniglot; other datasets take only the default.
        options: size and channels to convert to (None: the dataset's own) and a folder's class filter.

    Returns:
        uint8 `[classes, images per class, H, W(, C)]`.

    Example:
        >>> train = load_class_split("cifar-fs", "train", "~/data/cifar100")  # doctest: +SKIP
        >>> train.shape
        (64, 600, 32, 32, 3)
    """
    kind, argument = parse(dataset)
    spec = DATASETS[kind]
    if spec.splits and kind != "tfds":
        _check_split(spec, split)
    images = spec.load(argument, split, data_dir, source, options)
    if kind == "omniglot" or not (options.image_size or options.channels):
        return images
    own = images.shape[4] if images.ndim == 5 else 1
    return convert_images(images, options.image_size or images.shape[2], options.channels or own)


def image_channels(dataset: str, data_dir=None, options: DatasetOptions = DatasetOptions()) -> int:
    """The channels a dataset is read with: `options.channels`, else the dataset's own (read from the data when it
    depends on it: registered arrays, a TFDS dataset's image feature)."""
    kind, argument = parse(dataset)
    spec = DATASETS[kind]
    if spec.text:
        raise ValueError(f"{dataset} holds sentences, not images: it has no channels")
    if options.channels or spec.channels:
        return options.channels or spec.channels
    if kind == "imagefolder":
        return options.folder_settings().channels
    if kind == "arrays":
        images = next(iter(_registered(argument).values()))
        return images.shape[4] if images.ndim == 5 else 1
    builder = _tfds_builder(argument, data_dir)
    shape = builder.info.features[tfds_features(builder)[0]].shape
    return shape[-1] if shape and shape[-1] in (1, 3) else 3


def describe(dataset: str, options: DatasetOptions = DatasetOptions()) -> dict:
    """What a run records about its dataset (for folders: the class partition, listing hash, skipped files)."""
    kind, argument = parse(dataset)
    spec = DATASETS[kind]
    return {"dataset": dataset, **(spec.describe(argument, options) if spec.describe else {})}


def split_label(dataset: str, split: str) -> str:
    """How records name a split: `test (Vinyals)`, `test (CIFAR-FS, Bertinetto et al. 2019)`, ..."""
    return f"{split} ({spec_of(dataset).split_note})"


def is_text_dataset(dataset: str) -> bool:
    """Whether `dataset` holds sentences (a text dataset, or registered arrays of sentences)."""
    kind, argument = parse(dataset)
    if kind == "arrays":
        return is_text(next(iter(_registered(argument).values())))
    return DATASETS[kind].text


def is_unlabeled(dataset: str, split: str) -> bool:
    """Whether `split` of `dataset` is one pseudo-class of unlabeled images (e.g. STL-10's `unlabeled`)."""
    return split in spec_of(dataset).unlabeled_splits


# === Flat images of the official splits ===

SOURCES = sources.SOURCES


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    source: str = "files",
    tfds_data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> ImageDataset:
    """One official split (or `+`-joined splits) of `omniglot`, `cifar10` or `stl10` as flat images and labels.

    Args:
        name: a `DATASETS` entry with flat readers: `omniglot`, `cifar10`, `stl10`.
        split: an official split name, or several joined with `+`, e.g. `"train+unlabeled"`.
        data_dir: directory of the official files (default: the dataset's environment variable); for Omniglot
            also the source of the split files when `source="tfds"`.
        source: `files` (the official files) or `tfds` (TFDS' own builder of the dataset).
        tfds_data_dir: TFDS data directory (`source="tfds"`).
        manual_dir: TFDS manual directory holding the official archive (`source="tfds"`).

    Returns:
        An `ImageDataset`: uint8 images `[N, *image_shape]`, int64 labels (-1 = unlabeled), in file order.

    Example:
        >>> train = load_dataset("cifar10", "train", data_dir="~/data/cifar10")  # doctest: +SKIP
        >>> train.images.shape, train.labels[:3]
        ((50000, 32, 32, 3), array([6, 9, 9]))
    """
    flat = sorted(key for key, spec in DATASETS.items() if spec.files)
    if name not in DATASETS or DATASETS[name].files is None:
        raise ValueError(f"Unknown dataset {name!r} for flat images; registered: {flat} (class splits of every "
                         "dataset: load_class_split)")
    if source not in SOURCES:
        raise ValueError(f"Unknown dataset source {source!r}; expected one of {SOURCES}")
    entry = DATASETS[name].files
    parts = split.split("+")
    unknown = [part for part in parts if part not in entry.splits]
    if unknown:
        raise ValueError(f"Unknown {name} split {unknown[0]!r}; expected one of {entry.splits}, joined by '+'")
    if source == "files":
        return concatenate(entry.load_files(part, data_dir) for part in parts)
    return concatenate(entry.load_tfds(part, data_dir, tfds_data_dir, manual_dir) for part in parts)
