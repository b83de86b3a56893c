"""Every registered backbone is reachable from the command line: `mssl-tf train --backbone NAME` on a folder of
32x32 RGB images trains, the saved model takes 32x32x3 images, and `mssl-tf eval` scores it; a size a backbone
cannot take is refused with an error that names the backbone and its smallest size."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mssl_tf.backbones import IMAGE_BACKBONES, build_backbone

IMAGE_SIZE = 32  # not Omniglot's 28; the smallest size every registered backbone takes (ResNet-50's minimum)
CLASSES, IMAGES_PER_CLASS = 10, 6  # partitioned 6 / 2 / 2 (train / val / test)
# Train 2 steps + eval 4 episodes, measured on the project's 2-core machine shared at load average 2-3.5: conv4
# 5 s, resnet12 11-19 s, resnet18 25-33 s (20 s of it in `fit`: 11M parameters at full 32x32 resolution in its
# first stage), resnet50 82 s. Over ~20 s a backbone runs with the slow checks (`pytest -m slow`, .ci/run).
SLOW_BACKBONES = {"resnet18", "resnet50"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Ten class folders of six PNG/JPEG images each, RGB and RGBA, 20 to 60 pixels on a side, one colour per
    class with noise."""
    root = tmp_path_factory.mktemp("backbone_images")
    rng = np.random.default_rng(0)
    for index in range(CLASSES):
        folder = root / f"class{index}"
        folder.mkdir()
        colour = rng.integers(0, 256, 3)
        for number in range(IMAGES_PER_CLASS):
            height, width = (int(value) for value in rng.integers(20, 61, 2))
            pixels = np.clip(colour + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if number % 2:
                image.save(folder / f"image{number}.jpg")
            else:
                image.convert("RGBA").save(folder / f"image{number}.png")
    return root


def backbone_params():
    assert SLOW_BACKBONES <= set(IMAGE_BACKBONES), "SLOW_BACKBONES names a backbone that is no longer registered"
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_BACKBONES else name
            for name in sorted(IMAGE_BACKBONES)]


@pytest.mark.parametrize("backbone", backbone_params())
def test_every_backbone_trains_and_evaluates_from_the_command_line(backbone, folder, tmp_path, monkeypatch):
    from mssl_tf import cli
    from mssl_tf.training import load_trained

    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path / "cache"))
    run, records = tmp_path / "run", tmp_path / "records"
    start = time.perf_counter()
    assert cli.main(["train", "--backbone", backbone, "--dataset", f"imagefolder:{folder}",
                     "--image-size", str(IMAGE_SIZE), "--channels", "3", "--min-images", str(IMAGES_PER_CLASS),
                     "--method", "protonet", "--ways", "3", "--shots", "1", "--queries", "2", "--steps", "2",
                     "--steps-per-epoch", "2", "--validate-episodes", "2", "--output", str(run)]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["steps"] == 2
    assert summary["config"]["backbone"] == backbone
    assert summary["data"]["classes"] == {"train": 6, "val": 2, "test": 2}

    model, _ = load_trained(run)
    assert model.backbone.name == backbone, "the run trained the backbone it was asked for"
    assert model.backbone.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    reference = build_backbone(backbone, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    assert model.backbone.output_shape == reference.output_shape
    assert model.backbone.count_params() == reference.count_params()
    features = model.backbone(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))
    assert np.isfinite(features).all()

    assert cli.main(["eval", str(run), "--settings", "2w1s", "--episodes", "4", "--queries", "5",
                     "--results-dir", str(records)]) == 0
    record = json.loads((records / "run_2w1s.json").read_text())
    assert record["dataset"] == f"imagefolder:{folder}"
    assert record["episodes"] == 4 and record["ways"] == 2 and record["shots"] == 1
    print(f"{backbone}: train + eval in {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("backbone", sorted(IMAGE_BACKBONES))
def test_a_too_small_image_is_refused_by_name(backbone):
    """At 8x8 a backbone either builds (and gives one finite feature vector per image) or says which size it
    needs; an anonymous error from deep inside Keras (a pooling layer's "output size would be zero") fails."""
    try:
        model = build_backbone(backbone, input_shape=(8, 8, 3))
    except ValueError as error:
        assert f"{backbone} needs images of at least" in str(error), error
        assert "input_shape=(8, 8, 3)" in str(error) and "--image-size" in str(error)
        return
    assert np.isfinite(model(np.zeros((2, 8, 8, 3), np.float32))).all()


def test_the_command_line_refuses_a_folder_too_small_for_the_backbone(folder, tmp_path, monkeypatch):
    from mssl_tf import cli

    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"conv4 needs images of at least 16x16 .*got input_shape=\(12, 12, 3\)"):
        cli.main(["train", "--backbone", "conv4", "--dataset", f"imagefolder:{folder}", "--image-size", "12",
                  "--min-images", str(IMAGES_PER_CLASS), "--ways", "3", "--shots", "1", "--queries", "2",
                  "--steps", "1", "--output", str(tmp_path / "run")])
