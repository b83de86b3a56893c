"""The one dataset registry (`--dataset`): every entry read from tiny files written here in the official formats (a
CIFAR-10 python tarball, an extracted CIFAR-100 python folder with the real 100 fine label names, a packed STL-10
binary archive, a TFDS dataset prepared offline), through `load_class_split`, through `TrainConfig` +
`load_classes`, and through `mssl-tf train`.

Every fixture image carries its identity in its first pixel, `[label, source, index]`, so a test can say which
official image landed where."""

import json

import numpy as np
import pytest
from PIL import Image

from mssl_tf.data import class_splits
from mssl_tf.data.class_splits import DATASETS, DatasetOptions, load_class_split
from mssl_tf.data.omniglot import DatasetNotFoundError
from tests.test_rgb_sources import cifar_rows, python2_pickle, stl_bytes, write_tar

# CIFAR-100's fine label names in label order, as its `meta` file lists them (www.cs.toronto.edu/~kriz/cifar.html).
CIFAR100_FINE_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
# Bertinetto et al. 2019's CIFAR-FS validation and test classes (their 64 training classes are the other ones).
CIFAR_FS_VAL = {"beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea", "camel",
                "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor"}
CIFAR_FS_TEST = {"whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard", "plain",
                 "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck", "rocket"}


def coded_images(labels, source, size, rng):
    """Random images whose pixel [0, 0] is `(label, source, running index within the label)`."""
    images = rng.integers(0, 256, [len(labels), size, size, 3], dtype=np.uint8)
    seen = {}
    for position, label in enumerate(labels):
        images[position, 0, 0] = (label, source, seen.get(label, 0))
        seen[label] = seen.get(label, 0) + 1
    return images


def identities(class_array):
    """`[classes, n, H, W, 3]` → int `[classes, n, 3]`: each image's (label, source, index)."""
    return class_array[:, :, 0, 0, :].astype(int)


def shuffled_labels(classes, per_class, rng):
    return rng.permutation(np.repeat(np.arange(classes), per_class))


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
    """`cifar-10-python.tar.gz`: 5 training batches of 2 images per class (10 per class), a test batch of 3."""
    rng = np.random.default_rng(1)
    members = {}
    for batch in range(1, 7):
        name = f"data_batch_{batch}" if batch < 6 else "test_batch"
        labels = shuffled_labels(10, 2 if batch < 6 else 3, rng)
        images = coded_images(labels, batch, 32, rng)
        members[f"cifar-10-batches-py/{name}"] = python2_pickle({
            b"batch_label": name.encode(), b"labels": [int(label) for label in labels], b"data": cifar_rows(images),
            b"filenames": [f"{index}.png".encode() for index in range(len(labels))]})
    root = tmp_path_factory.mktemp("cifar10")
    write_tar(root / "cifar-10-python.tar.gz", members)
    return root


def write_cifar100(root, fine_names, rng, train_per_class=3, test_per_class=1):
    """An extracted `cifar-100-python/` folder: `meta`, `train` and `test` pickles with fine and coarse labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, per_class, source in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        labels = shuffled_labels(100, per_class, rng)
        images = coded_images(labels, source, 32, rng)
        (folder / split).write_bytes(python2_pickle({
            b"filenames": [f"{index}.png".encode() for index in range(len(labels))], b"batch_label": split.encode(),
            b"fine_labels": [int(label) for label in labels], b"coarse_labels": [int(label) // 5 for label in labels],
            b"data": cifar_rows(images)}))
    (folder / "meta").write_bytes(python2_pickle({
        b"fine_label_names": [name.encode() for name in fine_names],
        b"coarse_label_names": [f"coarse_{index}".encode() for index in range(20)]}))
    return root


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("cifar100"), CIFAR100_FINE_NAMES, np.random.default_rng(2))


@pytest.fixture(scope="module")
def stl10_dir(tmp_path_factory):
    """`stl10_binary.tar.gz`: 20 training and 2 test images per class (labels stored 1..10), 7 unlabeled."""
    rng = np.random.default_rng(3)
    members = {}
    for split, per_class, source in (("train", 20, 0), ("test", 2, 1)):
        labels = shuffled_labels(10, per_class, rng)
        members[f"stl10_binary/{split}_X.bin"] = stl_bytes(coded_images(labels, source, 96, rng))
        members[f"stl10_binary/{split}_y.bin"] = (labels + 1).astype(np.uint8).tobytes()
    members["stl10_binary/unlabeled_X.bin"] = stl_bytes(coded_images(np.full(7, 200), 2, 96, rng))
    root = tmp_path_factory.mktemp("stl10")
    write_tar(root / "stl10_binary.tar.gz", members)
    return root


TFDS_NAME = "mssl_registry_shapes"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS dataset prepared offline (3 classes of 8x8x3 images; `train` 5 per class, `test` 2, no validation
    split), by a builder that is not registered, so it is then found from its files alone as a user's would be."""
    tfds = pytest.importorskip("tensorflow_datasets")
    root = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(4)

    with tfds.core.registered.skip_registration():
        class MsslRegistryShapes(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(names=["circle", "square", "star"])}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(5, 0), "test": self._generate_examples(2, 1)}

            def _generate_examples(self, per_class, source):
                labels = np.repeat(np.arange(3), per_class)
                for key, (image, label) in enumerate(zip(coded_images(labels, source, 8, rng), labels)):
                    yield key, {"image": image, "label": int(label)}

        MsslRegistryShapes(data_dir=str(root)).download_and_prepare()
    return root


def registry_fixture(name, request):
    """(dataset string, data_dir) of every registered entry, read from the tiny files above."""
    if name == "omniglot":
        return "omniglot", request.getfixturevalue("omniglot_dir")
    if name == "imagefolder":
        folder = request.getfixturevalue("tmp_path") / "folder"
        rng = np.random.default_rng(5)
        for index in range(5):
            (folder / f"class{index}").mkdir(parents=True)
            for image in range(3):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    folder / f"class{index}" / f"{image}.png")
        return f"imagefolder:{folder}", None
    if name == "arrays":
        return class_splits.register_arrays("registry", {"train": np.zeros((3, 2, 6, 6, 3), np.uint8)}), None
    if name == "tfds":
        return f"tfds:{TFDS_NAME}", request.getfixturevalue("tfds_dir")
    if name == "wordnet":
        from tests.wordnet_fixture import write_wordnet

        return "wordnet", str(write_wordnet(request.getfixturevalue("tmp_path") / "wordnet"))
    directory = {"cifar10": "cifar10_dir", "cifar-fs": "cifar100_dir", "stl10": "stl10_dir"}[name]
    return name, request.getfixturevalue(directory)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_dataset_reads_every_split_as_class_arrays(name, request, monkeypatch, tmp_path):
    monkeypatch.setenv("MSSL_TF_CACHE_DIR", str(tmp_path / "cache"))
    dataset, data_dir = registry_fixture(name, request)
    spec = DATASETS[name]
    options = DatasetOptions(min_images=3) if name == "imagefolder" else DatasetOptions(min_images=1)
    for split in spec.splits or ("train",):
        images = load_class_split(dataset, split, data_dir, options=options)
        if spec.text:  # sentences: str [classes, per class]
            assert images.dtype == object and images.ndim == 2 and isinstance(images[0, 0], str), (split, images.shape)
        else:
            assert images.dtype == np.uint8 and images.ndim in (4, 5) and images.shape[0] >= 1, (split, images.shape)
        if spec.image_shape:
            shape = images.shape[2:] if images.ndim == 5 else (*images.shape[2:], 1)
            assert shape == spec.image_shape, (split, images.shape)
        if split in spec.unlabeled_splits:
            assert images.shape[0] == 1  # one pseudo-class
    assert class_splits.describe(dataset, options)["dataset"] == dataset
    assert class_splits.split_label(dataset, "test").startswith(f"test ({spec.split_note}")


# === cifar-fs ===


def test_cifar_fs_pools_cifar100_and_splits_it_by_the_published_class_lists(cifar100_dir):
    lists = class_splits.cifar_fs_classes()
    assert set(lists["val"]) == CIFAR_FS_VAL and set(lists["test"]) == CIFAR_FS_TEST
    assert set(lists["train"]) == set(CIFAR100_FINE_NAMES) - CIFAR_FS_VAL - CIFAR_FS_TEST
    seen = {}
    for split, count in (("train", 64), ("val", 16), ("test", 20), ("trainval", 80)):
        images = load_class_split("cifar-fs", split, cifar100_dir)
        assert images.shape == (count, 4, 32, 32, 3)
        ids = identities(images)
        labels = ids[:, 0, 0]
        assert (ids[:, :, 0] == labels[:, None]).all()  # a class holds one fine label
        # pooled: the 3 official training images of the class (source 0) in file order, then its test image
        pooled_order = np.broadcast_to([[0, 0], [0, 1], [0, 2], [1, 0]], ids[:, :, 1:].shape)
        np.testing.assert_array_equal(ids[:, :, 1:], pooled_order)
        seen[split] = [CIFAR100_FINE_NAMES[label] for label in labels]
    assert seen["train"] == lists["train"] and seen["test"] == lists["test"]
    assert seen["trainval"] == lists["train"] + lists["val"]


def test_cifar_fs_refuses_a_cifar100_whose_names_the_lists_do_not_partition(tmp_path):
    renamed = [("apple_pie" if name == "apple" else name) for name in CIFAR100_FINE_NAMES]
    root = write_cifar100(tmp_path, renamed, np.random.default_rng(6), 1, 1)
    with pytest.raises(ValueError, match=r"not a partition .*not CIFAR-100 fine labels: \['apple'\].*in no split: "
                                         r"\['apple_pie'\]"):
        load_class_split("cifar-fs", "test", root)


def test_cifar_fs_files_are_read_packed_too_and_missing_files_name_the_variable(cifar100_dir, tmp_path, monkeypatch):
    import tarfile

    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as archive:
        archive.add(cifar100_dir / "cifar-100-python", "cifar-100-python")
    packed = load_class_split("cifar-fs", "val", tmp_path)
    np.testing.assert_array_equal(packed, load_class_split("cifar-fs", "val", cifar100_dir))
    monkeypatch.setenv("MSSL_TF_CIFAR100_DIR", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match=r"\$MSSL_TF_CIFAR100_DIR.*cifar-100-python.tar.gz.*meta, train"):
        load_class_split("cifar-fs", "test")


# === cifar10 and stl10: splits that share classes ===


def test_cifar10_splits_hold_all_ten_classes_with_val_held_out_of_train(cifar10_dir):
    train, val, trainval, test = (load_class_split("cifar10", split, cifar10_dir)
                                  for split in ("train", "val", "trainval", "test"))
    assert train.shape == (10, 9, 32, 32, 3) and val.shape == (10, 1, 32, 32, 3) and test.shape == (10, 3, 32, 32, 3)
    for split in (train, val, trainval, test):
        np.testing.assert_array_equal(identities(split)[:, :, 0], np.arange(10)[:, None].repeat(split.shape[1], 1))
    np.testing.assert_array_equal(np.concatenate([train, val], axis=1), trainval)
    # training images in file order: batch 1's two images of a class, then batch 2's, ...; test from test_batch
    np.testing.assert_array_equal(identities(trainval)[0, :, 1], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    assert (identities(test)[:, :, 1] == 6).all()
    assert "share their classes" in class_splits.describe("cifar10")["note"]


def test_stl10_labeled_splits_and_the_unlabeled_pseudo_class(stl10_dir):
    train, val, test = (load_class_split("stl10", split, stl10_dir) for split in ("train", "val", "test"))
    assert train.shape == (10, 18, 96, 96, 3) and val.shape == (10, 2, 96, 96, 3) and test.shape == (10, 2, 96, 96, 3)
    assert (identities(train)[:, :, 0] == np.arange(10)[:, None]).all()  # stored 1..10, read 0..9
    assert (identities(test)[:, :, 1] == 1).all() and (identities(test)[:, :, 0] == np.arange(10)[:, None]).all()
    np.testing.assert_array_equal(identities(val)[:, :, 2], [[18, 19]] * 10)
    unlabeled = load_class_split("stl10", "unlabeled", stl10_dir)
    assert unlabeled.shape == (1, 7, 96, 96, 3) and (identities(unlabeled)[0, :, 1] == 2).all()
    both = load_class_split("stl10", "train+unlabeled", stl10_dir)
    assert both.shape == (1, 207, 96, 96, 3) and (identities(both)[0, -7:, 1] == 2).all()
    assert class_splits.is_unlabeled("stl10", "unlabeled") and not class_splits.is_unlabeled("stl10", "train")


def test_unlabeled_splits_train_only_methods_that_need_no_labels(stl10_dir, tmp_path):
    from mssl_tf.training import TrainConfig, train
    from mssl_tf.training.config import check

    with pytest.raises(ValueError, match="has no labels; protonet needs labeled episodes"):
        check(TrainConfig(dataset="stl10", split="unlabeled", data_dir=str(stl10_dir)))
    with pytest.raises(ValueError, match="--probe needs labels"):
        check(TrainConfig(method="simclr", dataset="stl10", split="unlabeled", probe=True))
    summary = train(TrainConfig(method="simclr", dataset="stl10", split="unlabeled", data_dir=str(stl10_dir),
                                image_size=16, batch_size=4, steps=2, steps_per_epoch=2, validate_ways=2,
                                validate_episodes=2, output=str(tmp_path / "run")))
    assert summary["steps"] == 2 and summary["config"]["views"] == "rgb"
    assert summary["labels_used"] is False and summary["views"]["horizontal_flip"] == 0.5  # the rgb preset


# === tfds:NAME ===


def test_a_local_tfds_dataset_reads_without_its_builder_code(tfds_dir):
    with pytest.raises(ValueError, match="no class has 20 or more images"):  # --min-images filters TFDS classes
        load_class_split(f"tfds:{TFDS_NAME}", "test", tfds_dir)
    options = DatasetOptions(min_images=2)
    train, val, test = (load_class_split(f"tfds:{TFDS_NAME}", split, tfds_dir, options=options)
                        for split in ("train", "val", "test"))
    assert train.shape == (3, 4, 8, 8, 3) and val.shape == (3, 1, 8, 8, 3) and test.shape == (3, 2, 8, 8, 3)
    assert (identities(test)[:, :, 0] == np.arange(3)[:, None]).all() and (identities(test)[:, :, 1] == 1).all()
    # no validation split in TFDS: val is each class's last training record (records regrouped by label)
    assert sorted(identities(np.concatenate([train, val], 1))[0, :, 2]) == [0, 1, 2, 3, 4]
    assert class_splits.image_channels(f"tfds:{TFDS_NAME}", tfds_dir) == 3


def test_tfds_never_downloads_and_says_what_is_missing(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DatasetNotFoundError, match="not prepared under .*nothing is downloaded"):
        load_class_split("tfds:mnist", "test", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="TFDS finds no such dataset"):
        load_class_split("tfds:no_such_dataset_anywhere", "test", tmp_path)


# === Conversion, views, the CLI path ===


def test_image_size_and_channels_convert_as_folder_images_are(cifar100_dir, tmp_path):
    original = load_class_split("cifar-fs", "test", cifar100_dir)
    small_grey = load_class_split("cifar-fs", "test", cifar100_dir, options=DatasetOptions(image_size=16, channels=1))
    assert small_grey.shape == (20, 4, 16, 16, 1)
    expected = np.asarray(Image.fromarray(original[3, 2]).convert("L").resize((16, 16), Image.BICUBIC))
    np.testing.assert_array_equal(small_grey[3, 2, ..., 0], expected)
    grey = class_splits.register_arrays("grey", {"train": original[:3, :, :, :, :1]})
    rgb = load_class_split(grey, "train", options=DatasetOptions(channels=3))
    assert rgb.shape == (3, 4, 32, 32, 3) and (rgb == original[:3, :, :, :, :1]).all()


def test_views_default_follows_the_channels_and_old_configs_keep_theirs(cifar100_dir):
    from mssl_tf.training import TrainConfig
    from mssl_tf.training.config import view_preset

    assert view_preset(TrainConfig()) == "omniglot"  # Omniglot drawings, as before
    assert view_preset(TrainConfig(dataset="cifar-fs", data_dir=str(cifar100_dir))) == "rgb"
    assert view_preset(TrainConfig(dataset="cifar-fs", channels=1)) == "omniglot"
    assert view_preset(TrainConfig(dataset="cifar-fs", views="omniglot_elastic")) == "omniglot_elastic"
    drawings = class_splits.register_arrays("drawings", {"val": np.zeros((2, 2, 5, 5), np.uint8)})  # [.., H, W]
    assert view_preset(TrainConfig(dataset=drawings)) == "omniglot"


def test_train_config_and_the_cli_train_on_cifar_fs(cifar100_dir, tmp_path, capsys):
    from mssl_tf import cli
    from mssl_tf.training import TrainConfig
    from mssl_tf.training.config import load_classes

    config = TrainConfig(dataset="cifar-fs", data_dir=str(cifar100_dir), image_size=24)
    assert load_classes(config, "train").shape == (64, 4, 24, 24, 3)
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "cifar-fs", "--data-dir", str(cifar100_dir), "--ways", "3", "--shots", "1",
                     "--queries", "2", "--steps", "2", "--steps-per-epoch", "2", "--validate-episodes", "2",
                     "--output", str(run)]) == 0
    summary = json.loads((run / "train.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["dataset"] == "cifar-fs"
    assert summary["config"]["views"] == "rgb" and summary["data"]["splits"] == {"train": 64, "val": 16, "test": 20}
    assert cli.main(["eval", str(run), "--settings", "3w1s", "--episodes", "4", "--queries", "2",
                     "--results-dir", str(tmp_path / "records")]) == 0
    record = json.loads((tmp_path / "records" / "run_3w1s.json").read_text())
    assert record["dataset"] == "cifar-fs" and record["split"] == "test (CIFAR-FS, Bertinetto et al. 2019)"


def test_unknown_datasets_and_the_help_list_the_registry(capsys):
    from mssl_tf import cli

    with pytest.raises(ValueError, match="unknown dataset 'cifar-100'.*cifar-fs.*cifar10.*stl10.*tfds:NAME"):
        class_splits.parse("cifar-100")
    with pytest.raises(ValueError, match="needs its argument: tfds:NAME"):
        class_splits.parse("tfds")
    with pytest.raises(ValueError, match="cifar10 splits are train, val, trainval, test, not 'unlabeled'"):
        load_class_split("cifar10", "unlabeled")
    with pytest.raises(ValueError, match="--source tfds reads Omniglot only"):
        load_class_split("cifar10", "test", source="tfds")
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    for spec in DATASETS.values():
        assert spec.usage in help_text, spec.usage
