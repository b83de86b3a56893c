import numpy as np
import pytest

from mssl_tf.data import omniglot


def test_missing_directory_names_the_variable_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv(omniglot.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(omniglot.DatasetNotFoundError) as error:
        omniglot.resolve_data_dir(None)
    message = str(error.value)
    assert omniglot.DATA_DIR_ENV in message
    assert "images_background.zip" in message and "splits/vinyals/test.txt" in message


def test_incomplete_directory_lists_what_is_missing(tmp_path, omniglot_dir):
    (tmp_path / "images_background.zip").symlink_to(omniglot_dir / "images_background.zip")
    with pytest.raises(omniglot.DatasetNotFoundError, match="missing images_evaluation.zip"):
        omniglot.resolve_data_dir(tmp_path)


def test_vinyals_split_sizes(omniglot_dir):
    sizes = {split: len(omniglot.read_split(split, omniglot_dir)) for split in omniglot.SPLIT_NAMES}
    assert sizes == {"train": 1028 * 4, "val": 172 * 4, "trainval": 1200 * 4, "test": 423 * 4}


def test_test_characters_never_appear_in_training_splits(omniglot_dir):
    test = {name for name, _ in omniglot.read_split("test", omniglot_dir)}
    for split in ("train", "val", "trainval"):
        assert not test & {name for name, _ in omniglot.read_split(split, omniglot_dir)}


def test_decoded_characters_and_preprocessing(omniglot_dir):
    characters = omniglot.load_characters(omniglot_dir)
    assert len(characters.names) == 964 + 659
    assert characters.images.shape == (1623, 20, 28, 28) and characters.images.dtype == np.uint8
    ink = characters.images.astype(np.float32) / 255
    assert 0.02 < ink.mean() < 0.3, "ink must be 1 on a 0 background"
    assert ink[:, :, 0, :].mean() < ink[:, :, 14, :].mean(), "glyphs are centred, the border is background"


def test_rotations_are_separate_classes(omniglot_dir):
    split = omniglot.read_split("test", omniglot_dir)
    images = omniglot.load_split("test", omniglot_dir)
    assert images.shape == (len(split), 20, 28, 28)
    assert split[0][1] == 0 and split[1] == (split[0][0], 90)
    np.testing.assert_array_equal(images[1], np.rot90(images[0], 1, axes=(1, 2)))


def test_second_load_reads_the_cache_instead_of_decoding(omniglot_dir, monkeypatch):
    omniglot.load_characters(omniglot_dir)

    def no_decoding(*_):
        raise AssertionError("decoded the PNGs again instead of reading the cache")

    monkeypatch.setattr(omniglot, "_decode_zip", no_decoding)
    assert omniglot.load_characters(omniglot_dir).images.shape[0] == 1623


def test_tfds_record_layout_gives_the_same_characters(omniglot_dir):
    """Records shaped like TFDS `omniglot` (105x105x3 PNG pixels, 0-based character ids) from the real zips."""
    import io
    import zipfile

    from PIL import Image

    alphabet_names = ["Alphabet_of_the_Magi", "Korean"]
    examples = []
    with zipfile.ZipFile(omniglot_dir / "images_background.zip") as archive:
        for member in sorted(archive.namelist()):
            parts = member.split("/")
            if len(parts) == 4 and parts[1] in alphabet_names and parts[2] in ("character01", "character02"):
                pixels = np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
                examples.append({"image": pixels, "alphabet": alphabet_names.index(parts[1]),
                                 "alphabet_char_id": int(parts[2][-2:]) - 1})
    assert examples[0]["image"].shape == (105, 105, 3)
    converted = omniglot.characters_from_examples(examples, alphabet_names)
    assert converted.names == ("Alphabet_of_the_Magi/character01", "Alphabet_of_the_Magi/character02",
                               "Korean/character01", "Korean/character02")
    reference = omniglot.load_characters(omniglot_dir)
    for position, name in enumerate(converted.names):
        np.testing.assert_array_equal(converted.images[position], reference.images[reference.names.index(name)])
