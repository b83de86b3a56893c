"""Your own images: a folder of class folders (nested, mixed formats, sizes and channels, broken files) through
decoding, the seeded class partition, `mssl-tf train --dataset imagefolder:PATH` and `mssl-tf eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mssl_tf.data import class_splits
from mssl_tf.data.image_folder import FolderSettings, decode_image, load_image_folder

CLASSES = [f"animals/class{index}" for index in range(5)] + [f"plants/trees/class{index}" for index in range(5)]
IMAGES_PER_CLASS = 6
OPENCLIPART = Path("/usr/share/openclipart/png")


def write_class(folder: Path, index: int, rng) -> None:
    """Six images of one colour: PNG RGBA, JPEG, grayscale PNG, GIF, BMP, WebP-free; sizes from 17 to 70 px."""
    folder.mkdir(parents=True)
    colour = tuple(int(value) for value in rng.integers(0, 256, 3))
    for number, (suffix, mode) in enumerate([(".png", "RGBA"), (".jpg", "RGB"), (".png", "L"), (".gif", "P"),
                                             (".bmp", "RGB"), (".png", "RGB")]):
        size = (int(rng.integers(17, 70)), int(rng.integers(17, 70)))
        image = Image.new("RGB", size, colour)
        if mode == "RGBA":
            image = image.convert("RGBA")
        elif mode in ("L", "P"):
            image = image.convert(mode)
        image.save(folder / f"image{number}{suffix}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        write_class(root / name, index, rng)
    (root / "animals" / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # truncated
    (root / "animals" / "class1" / "notes.txt").write_text("not an image")
    (root / "few").mkdir()
    Image.new("RGB", (30, 30), "red").save(root / "few" / "only.png")  # one image: too few to be a class
    return root


def test_decoding_composites_alpha_converts_channels_and_resizes(tmp_path):
    settings = FolderSettings(image_size=16, channels=3, min_images=1, images_per_class=1)
    transparent = Image.new("RGBA", (40, 20), (10, 200, 30, 0))
    transparent.paste((10, 200, 30, 255), (0, 0, 20, 20))  # opaque left half
    transparent.save(tmp_path / "alpha.png")
    decoded = decode_image(tmp_path / "alpha.png", settings)
    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
    assert tuple(decoded[8, 0]) == (10, 200, 30), "the opaque part keeps its colour"
    assert tuple(decoded[8, 15]) == (255, 255, 255), "transparency is composited on white"
    Image.new("L", (9, 30), 77).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "gray.png", settings), np.full((16, 16, 3), 77))
    gray = decode_image(tmp_path / "alpha.png", FolderSettings(16, channels=1, min_images=1, images_per_class=1))
    assert gray.shape == (16, 16, 1)
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ValueError, match="UnidentifiedImageError"):
        decode_image(tmp_path / "text.jpg", settings)


def test_a_folder_becomes_seeded_disjoint_splits_and_says_what_it_skipped(folder):
    settings = FolderSettings(image_size=24, channels=3, min_images=IMAGES_PER_CLASS, images_per_class=5)
    splits = load_image_folder(folder, settings, use_cache=False)
    assert {split: len(names) for split, names in splits.classes.items()} == {"train": 6, "val": 2, "test": 2}
    assert sorted(sum(splits.classes.values(), [])) == sorted(CLASSES), "nested class names, each in one split"
    for split, names in splits.classes.items():
        assert splits.images[split].shape == (len(names), 5, 24, 24, 3)
    assert {entry["path"] for entry in splits.skipped} == {"animals/class0/broken.png", "animals/class1/notes.txt"}
    assert splits.dropped_classes == ["few"]
    again = load_image_folder(folder, settings, use_cache=False)
    assert again.classes == splits.classes and again.listing_sha256 == splits.listing_sha256
    other_seed = load_image_folder(folder, FolderSettings(24, 3, IMAGES_PER_CLASS, 5, seed=1), use_cache=False)
    assert other_seed.classes != splits.classes
    # One colour per class: the images of a class decode to similar pixels, other classes differ.
    train = splits.images["train"].astype(float)
    within = np.abs(train - train[:, :1]).mean()
    between = np.abs(train[:, 0] - train[::-1, 0]).mean()
    assert 3 * within < between  # (gray and palette copies of a colour differ a little from it)


def test_the_cache_gives_the_same_splits(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path))
    settings = FolderSettings(image_size=20, min_images=IMAGES_PER_CLASS, images_per_class=IMAGES_PER_CLASS)
    first = load_image_folder(folder, settings)
    assert list((tmp_path / "imagefolder").glob("*.npz"))
    second = load_image_folder(folder, settings)
    assert second.classes == first.classes and second.skipped == first.skipped
    for split in first.images:
        np.testing.assert_array_equal(second.images[split], first.images[split])


def test_train_and_eval_on_a_folder_from_the_command_line(folder, tmp_path, monkeypatch):
    from mssl_tf import cli
    from mssl_tf.training import load_trained

    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path / "cache"))
    run, records = tmp_path / "run", tmp_path / "records"
    assert cli.main(["train", "--dataset", f"imagefolder:{folder}", "--image-size", "32",
                     "--min-images", str(IMAGES_PER_CLASS), "--ways", "3", "--shots", "1", "--queries", "2",
                     "--steps", "2", "--steps-per-epoch", "2", "--validate-episodes", "4", "--output", str(run)]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["config"]["dataset"] == f"imagefolder:{folder}"
    assert summary["data"]["classes"] == {"train": 6, "val": 2, "test": 2}
    assert summary["data"]["skipped_files"] == 2 and summary["data"]["dropped_classes"] == ["few"]
    assert summary["curve"][-1]["validation_accuracy"] >= 0  # a 2-way validation episode ran
    model, _ = load_trained(run)
    assert model.backbone.input_shape == (None, 32, 32, 3)
    assert cli.main(["eval", str(run), "--settings", "2w1s", "--episodes", "6", "--queries", "5",
                     "--results-dir", str(records)]) == 0
    record = json.loads((records / "run_2w1s.json").read_text())
    assert record["dataset"] == f"imagefolder:{folder}" and record["split"] == "test (seeded class partition)"
    assert record["episodes"] == 6 and record["ways"] == 2


def test_arrays_from_python_train_like_any_dataset(tmp_path):
    from mssl_tf.training import TrainConfig, train

    rng = np.random.default_rng(0)
    splits = {split: rng.integers(0, 256, (classes, 8, 20, 20, 3), dtype=np.uint8)
              for split, classes in (("train", 6), ("val", 3), ("test", 3))}
    dataset = class_splits.register_arrays("toy", splits)
    summary = train(TrainConfig(dataset=dataset, ways=3, shots=1, queries=2, steps=2, steps_per_epoch=2,
                                validate_ways=3, validate_episodes=4, output=str(tmp_path / "run")))
    assert summary["steps"] == 2 and summary["data"]["shapes"]["train"] == [6, 8, 20, 20, 3]
    with pytest.raises(ValueError, match="uint8 \\[classes, images per class"):
        class_splits.register_arrays("bad", {"train": np.zeros((3, 4), np.float32)})
    with pytest.raises(ValueError, match="unknown dataset"):
        class_splits.parse("cifar-100")


@pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="apt-get install openclipart-png to run on the real folder")
def test_the_openclipart_library_reads_as_a_folder_of_classes():
    splits = load_image_folder(OPENCLIPART, FolderSettings(image_size=32, min_images=20, images_per_class=20))
    kept = sum(len(names) for names in splits.classes.values())
    assert kept >= 20, splits.summary()["classes"]
    assert splits.images["test"].shape[1:] == (20, 32, 32, 3)
