"""Few-shot classes from any folder of images: `--dataset imagefolder:PATH`.

A class is a folder that holds images directly; nested folders are allowed and the class name is the folder's
path relative to the root (`animals/mammals`). Classes with at least `min_images` readable images are kept and
partitioned into train / val / test by a seeded permutation of their sorted names (the partition is recorded);
each kept class contributes `images_per_class` images (a seeded sample of its files, so every split is a dense
uint8 array `[classes, images_per_class, size, size, channels]`, the layout every episode and view pipeline takes).

Decoding survives real folders: PNG, JPEG, GIF (first frame), BMP, WebP; transparency composited on a white
background; grayscale and colour converted to `channels`; any size resized so the shorter side is `size`, then
centre-cropped to a square. A file that is not a readable image (corrupt, truncated, an unsupported format, a
stray text file) is skipped and listed with the reason, never an error mid-epoch.

Decoded splits are cached under `$MSSL_TF_CACHE_DIR/imagefolder/`, keyed by the listing (paths, sizes, modification
times) and the settings, so a second run reads one `.npz`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mssl_tf.data.omniglot import DatasetNotFoundError, cache_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FolderSettings:
    """How a folder becomes few-shot classes (recorded with every run that uses it)."""

    image_size: int = 84
    channels: int = 3
    min_images: int = 20
    images_per_class: int = 20
    split_fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)  # miniImageNet's 64/16/20 proportions
    seed: int = 0
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.images_per_class > self.min_images:
            raise ValueError(f"images_per_class ({self.images_per_class}) cannot exceed min_images "
                             f"({self.min_images}): every kept class must have that many images")
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError(f"split_fractions must be non-negative and sum to 1, got {self.split_fractions}")


@dataclass
class FolderSplits:
    """The classes of a folder, partitioned, with what was skipped and why."""

    root: str
    settings: FolderSettings
    classes: dict[str, list[str]]  # split → class names
    images: dict[str, np.ndarray]  # split → uint8 [classes, images_per_class, size, size, channels]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    dropped_classes: list[str] = field(default_factory=list)  # fewer than min_images readable images
    listing_sha256: str = ""

    def summary(self) -> dict:
        """What a run records about its data (the partition itself, the listing hash, the skipped files)."""
        return {"root": self.root, "settings": asdict(self.settings), "listing_sha256": self.listing_sha256,
                "classes": {split: len(names) for split, names in self.classes.items()},
                "partition": self.classes, "dropped_classes": self.dropped_classes,
                "skipped_files": len(self.skipped), "skipped": self.skipped}


def decode_image(path: Path, settings: FolderSettings) -> np.ndarray:
    """One file → uint8 `[size, size, channels]`; raises ValueError when it is not a readable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)  # the first frame of an animation
                image.load()
                image = composite(image, settings.background)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None
    return to_array(image, settings.image_size, settings.channels)


def to_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """An opaque image → uint8 `[size, size, channels]`: grey or RGB (Pillow's conversion), `resize_and_crop`."""
    image = resize_and_crop(image.convert("L" if channels == 1 else "RGB"), size)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., np.newaxis] if channels == 1 else array


def convert_images(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 images `[..., H, W]` or `[..., H, W, C]` (C 1 or 3) → `[..., size, size, channels]`, each converted as a
    decoded file is (`to_array`); returned unchanged when already that shape."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim >= 3 and images.shape[-1] not in (1, 3):
        images = images[..., np.newaxis]  # [..., H, W] grey
    lead, shape = images.shape[:-3], images.shape[-3:]
    if shape == (size, size, channels):
        return images
    flat = images.reshape(-1, *shape)
    converted = np.empty((len(flat), size, size, channels), np.uint8)
    for index, image in enumerate(flat):
        converted[index] = to_array(Image.fromarray(image[..., 0] if shape[-1] == 1 else image), size, channels)
    return converted.reshape(*lead, size, size, channels)


def composite(image: Image.Image, background) -> Image.Image:
    """Transparency (RGBA, LA, palette with a transparent index) composited over `background`; RGB out."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB") if image.mode not in ("L", "RGB") else image


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (bicubic), then the centre `size × size` square."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def list_classes(root: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """(class name (folder path relative to `root`, `/`-separated) → its image files, sorted; other files)."""
    classes: dict[str, list[Path]] = {}
    others = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            others.append(path)
            continue
        name = path.parent.relative_to(root).as_posix()
        classes.setdefault("." if name == "" else name, []).append(path)
    return classes, others


def listing_hash(classes: dict[str, list[Path]], root: Path) -> str:
    digest = hashlib.sha256()
    for name, paths in classes.items():
        for path in paths:
            stat = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def partition(names: list[str], settings: FolderSettings) -> dict[str, list[str]]:
    """A seeded permutation of the sorted class names cut by `split_fractions`."""
    order = np.random.default_rng(settings.seed).permutation(len(names))
    shuffled = [sorted(names)[index] for index in order]
    train_end = round(settings.split_fractions[0] * len(names))
    val_end = train_end + round(settings.split_fractions[1] * len(names))
    return {"train": sorted(shuffled[:train_end]), "val": sorted(shuffled[train_end:val_end]),
            "test": sorted(shuffled[val_end:])}


def load_image_folder(root, settings: FolderSettings = FolderSettings(), use_cache: bool = True) -> FolderSplits:
    """Reads, decodes and partitions the classes under `root` (see the module docstring)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetNotFoundError(f"imagefolder:{root} is not a directory; give a folder whose subfolders hold the "
                                   "images of one class each")
    listed, others = list_classes(root)
    digest = listing_hash(listed, root)
    key = hashlib.sha256(json.dumps([digest, asdict(settings)], sort_keys=True).encode()).hexdigest()[:24]
    cache = cache_dir() / "imagefolder" / f"{key}.npz"
    if use_cache and cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
        return FolderSplits(str(root), settings, meta["classes"], {split: stored[split] for split in SPLITS},
                            meta["skipped"], meta["dropped_classes"], digest)

    rng = np.random.default_rng(settings.seed)
    decoded: dict[str, list[np.ndarray]] = {}
    skipped = [{"path": path.relative_to(root).as_posix(), "reason": "not an image file name"} for path in others]
    dropped = []
    for name, paths in listed.items():
        images = []
        for path in paths:
            try:
                images.append(decode_image(path, settings))
            except ValueError as error:
                skipped.append({"path": path.relative_to(root).as_posix(), "reason": str(error)[:200]})
        if len(images) < settings.min_images:
            dropped.append(name)
            continue
        chosen = np.sort(rng.permutation(len(images))[: settings.images_per_class])
        decoded[name] = [images[index] for index in chosen]
    if len(decoded) < 3:
        raise DatasetNotFoundError(
            f"imagefolder:{root} has {len(decoded)} classes with at least {settings.min_images} readable images "
            f"({len(listed)} folders hold images, {len(skipped)} files skipped); few-shot splits need at least "
            "3 such classes: lower --min-images or point at a folder with more classes")
    classes = partition(list(decoded), settings)
    shape = (settings.images_per_class, settings.image_size, settings.image_size, settings.channels)
    images = {split: np.stack([np.stack(decoded[name]) for name in names]) if names else np.zeros((0, *shape), np.uint8)
              for split, names in classes.items()}
    splits = FolderSplits(str(root), settings, classes, images, skipped, dropped, digest)
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"classes": classes, "skipped": skipped, "dropped_classes": dropped})
        temporary = cache.with_suffix(".partial.npz")
        np.savez(temporary, meta=meta, **images)
        temporary.replace(cache)
    return splits
