"""The main job on the user's own images: train on an RGB folder → export → serve → query with the files
themselves (mixed formats and sizes) — and `mssl-tf pipeline --zoo NAME` for every zoo entry."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mssl_tf import cli, zoo
from mssl_tf.export import read_metadata

CLASSES = 25  # the 64/16/20 partition leaves 5 test classes: one 5-way episode's worth
IMAGES_PER_CLASS = 8
FORMATS = [(".png", "RGBA"), (".jpg", "RGB"), (".png", "L"), (".gif", "P"), (".bmp", "RGB"), (".png", "RGB")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Nested class folders of clip-art-like images: a class is a colour and a shape; sizes 20-90 px."""
    root = tmp_path_factory.mktemp("own-images")
    rng = np.random.default_rng(0)
    for index in range(CLASSES):
        directory = root / ("animals" if index % 2 else "plants/trees") / f"class{index:02d}"
        directory.mkdir(parents=True)
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        for number in range(IMAGES_PER_CLASS):
            suffix, mode = FORMATS[number % len(FORMATS)]
            width, height = (int(value) for value in rng.integers(20, 90, 2))
            image = Image.new("RGBA", (width, height), (255, 255, 255, 0))
            box = [width // 6, height // 6, 5 * width // 6, 5 * height // 6]
            pixels = image.load()
            for y in range(box[1], box[3]):
                for x in range(box[0], box[2]):
                    inside = (x + y) % (2 + index % 5) == 0 if index % 3 else (x * y) % (3 + index % 4) == 0
                    pixels[x, y] = (*colour, 255) if inside else (255 - colour[0], colour[1] // 2, 0, 200)
            image.convert(mode).save(directory / f"image{number}{suffix}")
    (root / "animals" / "class01" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def test_pipeline_trains_on_a_folder_and_serves_its_files(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path / "cache"))
    export_dir = tmp_path / "export"
    arguments = ["pipeline", "--train", "--dataset", f"imagefolder:{folder}", "--image-size", "32",
                 "--min-images", str(IMAGES_PER_CLASS), "--workdir", str(tmp_path / "run"), "--minutes", "0.05",
                 "--episodes", "4", "--file-episodes", "4", "--export-dir", str(export_dir), "--name", "own",
                 "--record", str(tmp_path / "pipeline.json")]
    assert cli.main(arguments) == 0
    out = capsys.readouterr().out
    assert "input 32x32x3, photos" in out
    assert "answers equal to the in-process model's on the same bytes: 100.0 %" in out
    record = json.loads((tmp_path / "pipeline.json").read_text())
    assert record["files_served_equal_in_process"] == 1.0 and record["dataset"] == f"imagefolder:{folder}"
    assert record["command"].startswith("mssl-tf pipeline --train")
    metadata = read_metadata(export_dir / "own" / "1")
    assert metadata["input"]["shape"] == [32, 32, 3] and metadata["input"]["kind"] == "photos"


@pytest.mark.slow
def test_pipeline_summary_compares_served_and_in_process(folder, tmp_path, monkeypatch):
    from mssl_tf.pipeline import PipelineConfig, run

    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path / "cache"))
    summary = run(PipelineConfig(
        train=True, dataset=f"imagefolder:{folder}", image_size=24, channels=1, min_images=IMAGES_PER_CLASS,
        minutes=0.02, workdir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"), name="gray", episodes=4,
        file_episodes=3))
    assert summary["input"]["shape"] == [24, 24, 1]
    assert summary["served_5w1s"] == pytest.approx(summary["in_process_5w1s"])
    assert summary["files_served_equal_in_process"] == 1.0 and summary["file_episodes"] == 3
    assert summary["grpc_max_abs_difference"] < 1e-5


def entry_data_available(name: str) -> str:
    """Why entry `name`'s pipeline cannot run here ('' when it can): a folder dataset that is not installed."""
    dataset = zoo.read_card(name)["dataset"]["name"]
    kind, _, root = dataset.partition(":")
    if kind == "imagefolder" and not Path(root).is_dir():
        return f"{name} is scored on {root}, not installed here (e.g. apt-get install openclipart-png)"
    if kind == "wordnet":
        from mssl_tf.data import wordnet

        try:
            wordnet.find_directory(None)
        except FileNotFoundError as error:
            return f"{name} is scored on WordNet, not installed here: {error}"
    return ""


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.available())
def test_pipeline_runs_for_every_zoo_entry(name, tmp_path, capsys):
    reason = entry_data_available(name)
    if reason:
        pytest.skip(reason)
    assert cli.main(["pipeline", "--zoo", name, "--episodes", "3", "--file-episodes", "2",
                     "--export-dir", str(tmp_path / "export"), "--name", "entry",
                     "--record", str(tmp_path / "pipeline.json")]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "pipeline.json").read_text())
    assert record["served_5w1s"] == pytest.approx(record["in_process_5w1s"])
    assert record["grpc_max_abs_difference"] < 1e-5 and record["rest_max_abs_difference"] < 1e-5
    if record["input"]["kind"] == "text":
        assert "of sentences over gRPC" in out and "no few_shot_png episodes" in out
    else:
        assert "answers equal to the in-process model's on the same bytes: 100.0 %" in out
