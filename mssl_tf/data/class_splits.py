"""The few-shot dataset registry every command takes (`--dataset`): a name → class splits.

A class split is uint8 `[classes, images per class, H, W]` (Omniglot) or `[classes, images per class, H, W, C]`,
the layout the episode, view and unsupervised-task pipelines and the frozen-encoder protocols read.

- `omniglot`: the Vinyals splits (`train`, `val`, `trainval`, `test`) from the official zips or TFDS;
- `imagefolder:PATH`: any folder of class folders (`mssl_tf.data.image_folder`), splits `train`, `val`, `test` by a
  seeded class partition;
- `arrays:NAME`: class arrays a Python program registered with `register_arrays(NAME, {"train": ..., ...})`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mssl_tf.data.image_folder import FolderSettings, load_image_folder
from mssl_tf.data.omniglot import load_split

KINDS = ("omniglot", "imagefolder", "arrays")
_ARRAYS: dict[str, dict[str, np.ndarray]] = {}


@dataclass(frozen=True)
class DatasetOptions:
    """How a dataset is read: the image size and channels a folder is decoded to, its class filter and seed."""

    image_size: int | None = None  # None: the dataset's own (Omniglot 28; folders 84)
    channels: int | None = None  # None: the dataset's own (Omniglot 1; folders 3)
    min_images: int = 20
    seed: int = 0

    def folder_settings(self) -> FolderSettings:
        return FolderSettings(image_size=self.image_size or 84, channels=self.channels or 3,
                              min_images=self.min_images, images_per_class=self.min_images, seed=self.seed)


def parse(dataset: str) -> tuple[str, str]:
    """`"imagefolder:/data/birds"` → `("imagefolder", "/data/birds")`; `"omniglot"` → `("omniglot", "")`."""
    kind, _, argument = dataset.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown dataset {dataset!r}; use omniglot, imagefolder:PATH or arrays:NAME")
    if kind != "omniglot" and not argument:
        raise ValueError(f"--dataset {kind} needs its argument: {kind}:{'PATH' if kind == 'imagefolder' else 'NAME'}")
    return kind, argument


def register_arrays(name: str, splits: dict[str, np.ndarray]) -> str:
    """Makes class arrays (uint8 `[classes, per class, H, W(, C)]` per split name) a dataset: returns `arrays:NAME`."""
    checked = {}
    for split, images in splits.items():
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (4, 5):
            raise ValueError(f"split {split!r} must be uint8 [classes, images per class, H, W(, C)], got "
                             f"{images.dtype} {images.shape}")
        checked[split] = images
    _ARRAYS[name] = checked
    return f"arrays:{name}"


def load_class_split(dataset: str, split: str, data_dir=None, source: str = "zips",
                     options: DatasetOptions = DatasetOptions()) -> np.ndarray:
    """One split of a registered dataset as class arrays."""
    kind, argument = parse(dataset)
    if kind == "omniglot":
        if (options.image_size or 28) != 28 or (options.channels or 1) != 1:
            raise ValueError("omniglot is read at 28x28x1; drop --image-size/--channels or use another dataset")
        return load_split(split, data_dir, source)
    if kind == "imagefolder":
        splits = load_image_folder(argument, options.folder_settings())
        if split not in splits.images:
            raise ValueError(f"imagefolder splits are {sorted(splits.images)}, not {split!r}")
        return splits.images[split]
    if argument not in _ARRAYS:
        raise ValueError(f"no arrays registered as {argument!r} in this process (mssl_tf.data.register_arrays)")
    if split not in _ARRAYS[argument]:
        raise ValueError(f"arrays:{argument} has splits {sorted(_ARRAYS[argument])}, not {split!r}")
    return _ARRAYS[argument][split]


def describe(dataset: str, options: DatasetOptions = DatasetOptions()) -> dict:
    """What a run records about its dataset (for folders: the class partition, listing hash, skipped files)."""
    kind, argument = parse(dataset)
    if kind == "imagefolder":
        return {"dataset": dataset, **load_image_folder(argument, options.folder_settings()).summary()}
    if kind == "arrays":
        shapes = {split: list(images.shape) for split, images in _ARRAYS[argument].items()}
        return {"dataset": dataset, "shapes": shapes}
    return {"dataset": dataset}


def split_label(dataset: str, split: str) -> str:
    """How records name a split: `test (Vinyals)` for Omniglot, `test (seeded class partition)` for folders."""
    return f"{split} (Vinyals)" if parse(dataset)[0] == "omniglot" else f"{split} (seeded class partition)"
