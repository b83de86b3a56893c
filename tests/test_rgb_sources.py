"""Dataset sources: CIFAR-10 and STL-10 read from tiny archives written here in the official formats, the registry,
clear errors for missing files, and the TFDS path (real TFDS builders on the same tiny archives, no network)."""

import io
import json
import pickle
import struct
import sys
import tarfile

import numpy as np
import pytest

from mssl_tf.data import class_splits, omniglot, sources
from mssl_tf.data.omniglot import DatasetNotFoundError

rng = np.random.default_rng(7)


# === Writers of the official formats ===


class Python2Pickler(pickle._Pickler):
    """Pickles like the Python 2 `cPickle.dump(..., protocol=2)` that wrote the CIFAR-10 batches.

    Strings (keys, raw array bytes) are Python 2 `str` (SHORT_BINSTRING / BINSTRING opcodes, read back as bytes
    with `encoding="bytes"`), and arrays name `numpy.core.multiarray._reconstruct`, as in the official files.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_string(self, text):
        data = text.encode("latin-1") if isinstance(text, str) else text
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(text)

    dispatch[bytes] = save_python2_string
    dispatch[str] = save_python2_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def python2_pickle(value) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


def cifar_rows(images):
    """`[n, 32, 32, 3]` → `[n, 3072]` by the official rule: byte `channel * 1024 + row * 32 + column`."""
    rows = np.zeros([len(images), 3072], np.uint8)
    for channel in range(3):
        for row in range(32):
            for column in range(32):
                rows[:, channel * 1024 + row * 32 + column] = images[:, row, column, channel]
    return rows


def stl_bytes(images):
    """`[n, 96, 96, 3]` → bytes by the official rule: per image, byte `channel * 9216 + column * 96 + row`."""
    flat = np.zeros([len(images), 3 * 96 * 96], np.uint8)
    channel, row, column = np.meshgrid(np.arange(3), np.arange(96), np.arange(96), indexing="ij")
    flat[:, channel * 9216 + column * 96 + row] = images[:, row, column, channel]
    return flat.tobytes()


def write_tar(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def random_split(count, size, labels_from=0, labels_to=10):
    return (rng.integers(0, 256, [count, size, size, 3], dtype=np.uint8),
            rng.integers(labels_from, labels_to, count).astype(np.int64))


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    """Tiny CIFAR-10 in both official versions: 5 training batches of 2-3 images and a test batch of 4."""
    batches = {f"data_batch_{index}": random_split(2 + index % 2, 32) for index in range(1, 6)}
    batches["test_batch"] = random_split(4, 32)
    python, binary = {}, {}
    for name, (images, labels) in batches.items():
        python[f"cifar-10-batches-py/{name}"] = python2_pickle({
            b"batch_label": f"{name} of tiny CIFAR-10".encode(),
            b"labels": [int(label) for label in labels],
            b"data": cifar_rows(images),
            b"filenames": [f"image_{index}.png".encode() for index in range(len(labels))],
        })
        records = np.concatenate([labels.astype(np.uint8)[:, None], cifar_rows(images)], axis=1)
        binary[f"cifar-10-batches-bin/{name}.bin"] = records.tobytes()
    python["cifar-10-batches-py/batches.meta"] = python2_pickle({
        b"label_names": [name.encode() for name in sources.CIFAR10_CLASS_NAMES], b"num_cases_per_batch": 10000,
        b"num_vis": 3072})
    binary["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(sources.CIFAR10_CLASS_NAMES).encode() + b"\n"
    root = tmp_path_factory.mktemp("cifar10")
    write_tar(root / "cifar-10-python.tar.gz", python)
    write_tar(root / "cifar-10-binary.tar.gz", binary)
    (root / "binary-only").mkdir()
    (root / "binary-only" / "cifar-10-binary.tar.gz").symlink_to(root / "cifar-10-binary.tar.gz")
    for members in (python, binary):
        for name, data in members.items():
            (root / "extracted" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "extracted" / name).write_bytes(data)
    train = [batches[f"data_batch_{index}"] for index in range(1, 6)]
    expected = {
        "train": (np.concatenate([images for images, _ in train]), np.concatenate([labels for _, labels in train])),
        "test": batches["test_batch"],
    }
    return root, expected


@pytest.fixture(scope="module")
def stl10(tmp_path_factory):
    """Tiny STL-10: 3 training, 2 test and 5 unlabeled images, labels stored 1..10."""
    splits = {"train": random_split(3, 96, 1, 11), "test": random_split(2, 96, 1, 11),
              "unlabeled": random_split(5, 96)}
    members = {}
    for split, (images, labels) in splits.items():
        members[f"stl10_binary/{split}_X.bin"] = stl_bytes(images)
        if split != "unlabeled":
            members[f"stl10_binary/{split}_y.bin"] = labels.astype(np.uint8).tobytes()
    members["stl10_binary/class_names.txt"] = "\n".join(sources.STL10_CLASS_NAMES).encode() + b"\n"
    members["stl10_binary/fold_indices.txt"] = b"0 1\n1 2\n"
    root = tmp_path_factory.mktemp("stl10")
    write_tar(root / "stl10_binary.tar.gz", members)
    for name, data in members.items():
        (root / "extracted" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "extracted" / name).write_bytes(data)
    expected = {split: (images, labels - 1 if split != "unlabeled" else np.full(len(images), -1))
                for split, (images, labels) in splits.items()}
    return root, expected


def assert_same(dataset, expected):
    images, labels = expected
    assert dataset.images.dtype == np.uint8 and dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.labels, labels)


# === CIFAR-10 ===


@pytest.mark.parametrize("where", [
    "python archive in directory", "python archive path", "python extracted folder in directory",
    "python batch files directly", "binary archive in directory", "binary archive path", "binary extracted folder",
])
def test_cifar10_reads_back_the_generated_pixels_and_labels(cifar10, where):
    root, expected = cifar10
    data_dir = {
        "python archive in directory": root,
        "python archive path": root / "cifar-10-python.tar.gz",
        "python extracted folder in directory": root / "extracted",
        "python batch files directly": root / "extracted" / "cifar-10-batches-py",
        "binary archive in directory": root / "binary-only",
        "binary archive path": root / "cifar-10-binary.tar.gz",
        "binary extracted folder": root / "extracted" / "cifar-10-batches-bin",
    }[where]
    for split in ("train", "test"):
        dataset = sources.load_cifar10(split, data_dir)
        assert_same(dataset, expected[split])
        assert dataset.class_names[0] == "airplane" and len(dataset.class_names) == 10


def test_cifar10_pixel_layout_by_hand():
    """Official layout: 1024 red bytes, then green, then blue; each plane row-major (first 32 bytes = top row)."""
    row = np.zeros(3072, np.uint8)
    row[1] = 11  # red, row 0, column 1
    row[32] = 22  # red, row 1, column 0
    row[1024 + 2 * 32 + 5] = 33  # green, row 2, column 5
    row[2048 + 31 * 32 + 30] = 44  # blue, row 31, column 30
    images, labels = sources.read_cifar10_python_batch(
        io.BytesIO(python2_pickle({b"data": row[None], b"labels": [7]})))
    expected = np.zeros([1, 32, 32, 3], np.uint8)
    expected[0, 0, 1, 0], expected[0, 1, 0, 0], expected[0, 2, 5, 1], expected[0, 31, 30, 2] = 11, 22, 33, 44
    np.testing.assert_array_equal(images, expected)
    assert labels.tolist() == [7]
    binary_images, binary_labels = sources.read_cifar10_binary_batch(bytes([7]) + row.tobytes())
    np.testing.assert_array_equal(binary_images, expected)
    assert binary_labels.tolist() == [7]


def test_cifar10_environment_variable(cifar10, monkeypatch):
    root, expected = cifar10
    monkeypatch.setenv(sources.CIFAR10_DIR_ENV, str(root))
    assert_same(class_splits.load_dataset("cifar10", "test"), expected["test"])


def test_cifar10_pickles_cannot_run_code():
    class Exploit:
        def __reduce__(self):
            return (print, ("ran code from a pickle",))

    with pytest.raises(pickle.UnpicklingError, match="Refusing to unpickle builtins.print"):
        sources.read_cifar10_python_batch(io.BytesIO(pickle.dumps({b"data": Exploit(), b"labels": []})))


def test_cifar10_incomplete_or_broken_archive_is_a_clear_error(tmp_path):
    write_tar(tmp_path / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": b""})
    with pytest.raises(DatasetNotFoundError, match="lacks cifar-10-batches-py/data_batch_1"):
        sources.load_cifar10("train", tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(ValueError, match="not a readable tar archive"):
        sources.load_cifar10("train", tmp_path)


# === STL-10 ===


@pytest.mark.parametrize("where", ["archive in directory", "archive path", "extracted folder in directory",
                                   "bin files directly"])
def test_stl10_reads_back_the_generated_pixels_and_labels(stl10, where, monkeypatch):
    root, expected = stl10
    data_dir = {"archive in directory": root, "archive path": root / "stl10_binary.tar.gz",
                "extracted folder in directory": root / "extracted",
                "bin files directly": root / "extracted" / "stl10_binary"}[where]
    monkeypatch.setattr(sources, "_STL10_IMAGES_PER_READ", 2)  # several reads per file: 2 + 2 + 1 unlabeled
    for split in ("train", "test", "unlabeled"):
        dataset = sources.load_stl10(split, data_dir)
        assert_same(dataset, expected[split])
        assert dataset.class_names == ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                                       "truck")


def test_stl10_pixel_layout_by_hand():
    """Official layout: per image the red, green, blue 96x96 planes, each column-major (first 96 bytes = left
    column, top to bottom). A byte at offset 1 is therefore row 1 of column 0, and offset 96 is row 0 of column 1."""
    image = np.zeros(3 * 96 * 96, np.uint8)
    image[1] = 11  # red, column 0, row 1
    image[96] = 22  # red, column 1, row 0
    image[9216 + 5 * 96 + 2] = 33  # green, column 5, row 2
    image[2 * 9216 + 30 * 96 + 95] = 44  # blue, column 30, row 95
    images = sources.read_stl10_images(io.BytesIO(image.tobytes()), image.size)
    expected = np.zeros([1, 96, 96, 3], np.uint8)
    expected[0, 1, 0, 0], expected[0, 0, 1, 0], expected[0, 2, 5, 1], expected[0, 95, 30, 2] = 11, 22, 33, 44
    np.testing.assert_array_equal(images, expected)
    assert sources.read_stl10_labels(bytes([1, 10, 3])).tolist() == [0, 9, 2]


def test_stl10_train_plus_unlabeled_and_environment_variable(stl10, monkeypatch):
    root, expected = stl10
    monkeypatch.setenv(sources.STL10_DIR_ENV, str(root))
    dataset = class_splits.load_dataset("stl10", "train+unlabeled")
    assert_same(dataset, tuple(np.concatenate([expected["train"][i], expected["unlabeled"][i]]) for i in (0, 1)))
    assert dataset.labels.tolist()[-5:] == [sources.UNLABELED] * 5


def test_stl10_malformed_files_are_clear_errors(tmp_path):
    (tmp_path / "test_X.bin").write_bytes(bytes(3 * 96 * 96 + 1))
    (tmp_path / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(ValueError, match="not a whole number of 27648-byte images"):
        sources.load_stl10("test", tmp_path)
    (tmp_path / "test_X.bin").write_bytes(bytes(3 * 96 * 96))
    (tmp_path / "test_y.bin").write_bytes(bytes([11]))
    with pytest.raises(ValueError, match="labels outside 0..9"):
        sources.load_stl10("test", tmp_path)


# === Registry ===

FLAT_DATASETS = sorted(name for name, spec in class_splits.DATASETS.items() if spec.files)
EXPECTED_FILES = {
    "omniglot": ["images_background.zip", "splits/vinyals/test.txt"],
    "cifar10": ["cifar-10-python.tar.gz", "cifar-10-batches-py/", "cifar-10-binary.tar.gz", "test_batch"],
    "stl10": ["stl10_binary.tar.gz", "stl10_binary/", "test_X.bin", "test_y.bin"],
}


@pytest.mark.parametrize("name", FLAT_DATASETS)
def test_missing_directory_names_the_variable_and_the_expected_files(name, tmp_path, monkeypatch):
    entry = class_splits.DATASETS[name]
    monkeypatch.setenv(entry.data_dir_env, str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as error:
        class_splits.load_dataset(name, "test")
    message = str(error.value)
    assert f"${entry.data_dir_env}" in message and "--data-dir" in message
    for expected in EXPECTED_FILES[name]:
        assert expected in message


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_no_directory_at_all_says_how_to_give_one(name, tmp_path, monkeypatch):
    monkeypatch.delenv(class_splits.DATASETS[name].data_dir_env, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=rf"No .* directory given\. Pass --data-dir or set \$MSSL_TF_"):
        class_splits.load_dataset(name, "test")


@pytest.mark.parametrize("name", FLAT_DATASETS)
def test_every_registered_dataset_gives_images_of_its_shape(name, request):
    data_dir = {"omniglot": lambda: request.getfixturevalue("omniglot_dir"),
                "cifar10": lambda: request.getfixturevalue("cifar10")[0],
                "stl10": lambda: request.getfixturevalue("stl10")[0]}[name]()
    entry = class_splits.DATASETS[name]
    dataset = class_splits.load_dataset(name, "test", data_dir)
    assert dataset.images.shape[1:] == entry.image_shape and dataset.images.dtype == np.uint8
    assert len(dataset.labels) == len(dataset.images) > 0
    assert 0 <= dataset.labels.min() and dataset.labels.max() < len(dataset.class_names)


def test_omniglot_flat_images_are_the_split_classes_in_order(omniglot_dir):
    classes = omniglot.load_split("val", omniglot_dir)
    dataset = class_splits.load_dataset("omniglot", "val", omniglot_dir)
    assert dataset.images.shape == (len(classes) * 20, 28, 28, 1)
    np.testing.assert_array_equal(dataset.images[20 * 5 + 3, ..., 0], classes[5, 3])
    np.testing.assert_array_equal(dataset.labels[:45], np.repeat([0, 1, 2], [20, 20, 5]))
    name, rotation = omniglot.read_split("val", omniglot_dir)[5]
    assert dataset.class_names[5] == f"{name}/rot{rotation:03d}"


def test_unknown_names_are_clear_errors(cifar10):
    with pytest.raises(ValueError, match="registered"):
        class_splits.load_dataset("cifar-10")
    with pytest.raises(ValueError, match=r"split 'unlabeled'; expected one of \('train', 'test'\)"):
        class_splits.load_dataset("cifar10", "train+unlabeled", cifar10[0])
    with pytest.raises(ValueError, match="source"):
        class_splits.load_dataset("cifar10", source="internet")


# === TensorFlow Datasets ===


def test_tfds_records_convert_to_images_and_labels():
    batches = [{"image": np.full([2, 4, 4, 3], 9, np.uint8), "label": np.array([3, -1])},
               {"image": np.zeros([1, 4, 4, 3], np.uint8), "label": np.array([0])}]
    dataset = sources.dataset_from_tfds_batches(batches, ["a", "b", "c", "d"])
    assert dataset.images.shape == (3, 4, 4, 3) and dataset.images[1].max() == 9 and dataset.images[2].max() == 0
    assert dataset.labels.tolist() == [3, -1, 0] and dataset.labels.dtype == np.int64
    assert dataset.class_names == ("a", "b", "c", "d")
    with pytest.raises(ValueError, match="labels outside -1..3"):
        sources.dataset_from_tfds_batches([{"image": np.zeros([1, 4, 4, 3]), "label": np.array([4])}], "abcd")


def test_tfds_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'mssl-tf\[tfds\]'"):
        class_splits.load_dataset("cifar10", "test", source="tfds")


def place_in_tfds_download_cache(tfds_data_dir, archive, url, sha256):
    """Puts `archive` where TFDS keeps a finished download of `url` with its registered sha256, so the real
    builder prepares from it without network (TFDS trusts its cache; the official archive goes in the manual
    directory instead, where TFDS verifies the checksum)."""
    from tensorflow_datasets.core.download import resource

    path = tfds_data_dir / "downloads" / resource.get_dl_fname(url, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive.read_bytes())
    path.with_name(path.name + ".INFO").write_text(json.dumps({"urls": [url]}))


def as_set(dataset):
    return sorted(zip((image.tobytes() for image in dataset.images), dataset.labels.tolist()))


def test_tfds_builders_prepared_from_the_tiny_archives_match_the_file_readers(cifar10, stl10, tmp_path):
    """TFDS' own CIFAR-10 (binary version) and STL-10 builders decode the tiny archives independently of our
    readers (STL-10: TFDS transposes (0, 3, 2, 1)); both must give the same images and labels."""
    pytest.importorskip("tensorflow_datasets")
    place_in_tfds_download_cache(
        tmp_path, cifar10[0] / "cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")
    place_in_tfds_download_cache(
        tmp_path, stl10[0] / "stl10_binary.tar.gz", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866")
    for name, splits, files_dir in (("cifar10", ("train", "test"), cifar10[0]),
                                    ("stl10", ("train", "test", "unlabeled"), stl10[0])):
        for split in splits:
            through_tfds = class_splits.load_dataset(name, split, source="tfds", tfds_data_dir=tmp_path)
            from_files = class_splits.load_dataset(name, split, files_dir)
            assert through_tfds.images.dtype == np.uint8 and through_tfds.labels.dtype == np.int64
            assert through_tfds.class_names == from_files.class_names
            assert as_set(through_tfds) == as_set(from_files)


def test_tfds_without_download_names_the_manual_directory(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DatasetNotFoundError, match=r"Put the official stl10_binary.tar.gz in .*downloads/manual"):
        sources.load_from_tfds("stl10", "test", tfds_data_dir=tmp_path, download=False)
