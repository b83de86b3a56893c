"""What a user gets from `pip install .` (not editable) and from `import mssl_tf` / `mssl-tf` on a fresh shell."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TF_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.MULTILINE)  # TensorFlow's C++ log


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(directory), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (found,) = directory.glob("mssl_tf-*.whl")
    return found


def test_the_wheel_ships_every_zoo_card_and_its_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    cards = sorted((ROOT / "zoo").glob("*.json"))
    assert cards
    for card in cards:
        assert f"mssl_tf/zoo_entries/{card.name}" in names
        weights = json.loads(card.read_text())["weights"]["file"]
        assert f"mssl_tf/zoo_entries/{Path(weights).as_posix()}" in names, weights


def test_the_wheel_ships_the_dataset_split_lists(wheel):
    assert "mssl_tf/data/splits/cifar_fs.json" in set(zipfile.ZipFile(wheel).namelist())


def test_an_installed_copy_lists_and_loads_the_zoo_with_its_hashes_checked(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import mssl_tf, numpy as np\n"
        "assert mssl_tf.__file__.startswith(sys.path[0]), mssl_tf.__file__\n"
        "print(mssl_tf.zoo.zoo_dir()); print(','.join(mssl_tf.zoo.list()))\n"
        "model = mssl_tf.zoo.load('prototypical-networks-conv4-omniglot')\n"
        "print(model(np.zeros([2, 28, 28, 1], np.float32)).shape)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    zoo_dir, entries, shape = completed.stdout.split("\n")[:3]
    assert Path(zoo_dir) == site / "mssl_tf" / "zoo_entries"
    assert entries.split(",") == sorted(card.stem for card in (ROOT / "zoo").glob("*.json"))
    assert shape == "(2, 64)"


def test_import_mssl_tf_exposes_the_zoo_without_starting_tensorflow():
    script = ("import sys, mssl_tf\nprint('tensorflow' in sys.modules)\n"
              "print(len(mssl_tf.zoo.list()) > 0, 'tensorflow' in sys.modules)\n")
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split() == ["False", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'zooo'"):
        import mssl_tf

        mssl_tf.zooo  # noqa: B018


def test_the_command_line_hides_tensorflow_start_up_lines_unless_verbose(tmp_path):
    def start(*flags):
        # Exporting loads a model, so TensorFlow probes its devices (CUDA's ERROR line on a machine without a GPU).
        # Both runs start at once, each into its own directory: two single-threaded start-ups on two cores.
        command = [sys.executable, "-m", "mssl_tf.cli", *flags, "export", "prototypical-networks-conv4-omniglot",
                   "--base-dir", str(tmp_path / f"export{len(flags)}"), "--no-warmup", "--overwrite", "--version", "1"]
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={key: value for key, value in __import__("os").environ.items()
                                     if key != "TF_CPP_MIN_LOG_LEVEL"})

    def stderr(process):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        assert "exported prototypical-networks-conv4-omniglot" in stdout
        return stderr

    processes = start("--verbose"), start()
    try:
        verbose, quiet = (stderr(process) for process in processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if not TF_LOG_LINE.search(verbose):
        pytest.skip("TensorFlow printed no C++ log line at start-up on this machine even with --verbose")
    assert not TF_LOG_LINE.search(quiet), "TensorFlow's start-up lines reach a newcomer's terminal"
