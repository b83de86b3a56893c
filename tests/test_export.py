"""SavedModel export: signatures as TF Serving sees them, fresh-process reload, outputs equal the Keras model's."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.saved_model import loader_impl

from mssl_tf import export, zoo
from mssl_tf.data import EpisodeSpec, episode_dataset, load_split
from mssl_tf.data.omniglot import decode_png, resolve_data_dir

ENTRY = "prototypical-networks-conv4-omniglot"


@pytest.fixture(scope="module")
def model():
    return zoo.load(ENTRY)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    return export.export_model(model, base, ENTRY, provenance={"zoo_entry": ENTRY})


@pytest.fixture(scope="module")
def test_images(omniglot_dir):
    return load_split("test", omniglot_dir)


def signature_defs(version_dir):
    """What `saved_model_cli show --all` prints, read from saved_model.pb."""
    meta_graph = loader_impl.parse_saved_model(str(version_dir)).meta_graphs[0]
    assert list(meta_graph.meta_info_def.tags) == ["serve"]
    return meta_graph.signature_def


def describe(tensor_infos):
    return {key: (tf.dtypes.as_dtype(info.dtype).name, [d.size for d in info.tensor_shape.dim])
            for key, info in tensor_infos.items()}


def test_signatures_are_the_documented_ones(exported):
    defs = signature_defs(exported)
    assert set(export.SIGNATURES) <= set(defs)
    image = [-1, 28, 28, 1]
    assert describe(defs["serving_default"].inputs) == {"images": ("uint8", image)}
    assert describe(defs["serving_default"].outputs) == {"embeddings": ("float32", [-1, 64])}
    assert describe(defs["embed_float"].inputs) == {"images": ("float32", image)}
    assert describe(defs["embed_png"].inputs) == {"png": ("string", [-1])}
    assert describe(defs["few_shot"].inputs) == {
        "support_images": ("uint8", image), "support_labels": ("int32", [-1]), "query_images": ("uint8", image)}
    assert describe(defs["few_shot"].outputs) == {"logits": ("float32", [-1, -1]), "predictions": ("int32", [-1])}
    assert all(defs[name].method_name == "tensorflow/serving/predict" for name in export.SIGNATURES)


def test_version_layout_metadata_and_warmup(exported):
    assert exported.name == "1" and exported.parent.name == ENTRY
    assert not [p for p in exported.parent.iterdir() if p.name != "1"], "the staging directory was left behind"
    metadata = export.read_metadata(exported)
    assert metadata["zoo_entry"] == ENTRY and metadata["embedding_dim"] == 64
    from tensorflow_serving.apis import prediction_log_pb2

    logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in
            tf.data.TFRecordDataset(str(exported / "assets.extra" / "tf_serving_warmup_requests"))]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == list(export.SIGNATURES)


def test_versions_increment_and_are_not_overwritten(model, exported):
    with pytest.raises(FileExistsError, match="--version"):
        export.export_model(model, exported.parents[1], ENTRY, 1, warmup=False)
    second = export.export_model(model, exported.parents[1], ENTRY, warmup=False)
    assert second.name == "2" and export.versions(exported.parent) == [1, 2]
    with pytest.raises(ValueError, match="positive"):
        export.export_model(model, exported.parents[1], ENTRY, 0, warmup=False)


RELOAD_SCRIPT = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
inputs = np.load(sys.argv[2])
outputs = {
    "embeddings": loaded.signatures["serving_default"](images=tf.constant(inputs["images"]))["embeddings"],
    "float": loaded.signatures["embed_float"](images=tf.constant(inputs["images"] / np.float32(255)))["embeddings"],
    "png": loaded.signatures["embed_png"](png=tf.constant(list(inputs["png"])))["embeddings"],
}
few_shot = loaded.signatures["few_shot"](support_images=tf.constant(inputs["support_images"]),
    support_labels=tf.constant(inputs["support_labels"]), query_images=tf.constant(inputs["query_images"]))
outputs.update(logits=few_shot["logits"], predictions=few_shot["predictions"])
np.savez(sys.argv[3], **{key: value.numpy() for key, value in outputs.items()})
"""


def test_fresh_process_reload_gives_the_keras_outputs(model, exported, test_images, tmp_path):
    images = test_images[:8, 0][..., None]
    zip_member = __import__("zipfile").ZipFile(resolve_data_dir(None) / "images_evaluation.zip")
    png_names = [name for name in zip_member.namelist() if name.endswith(".png")][:4]
    pngs = [zip_member.read(name) for name in png_names]
    task = next(iter(episode_dataset(test_images, EpisodeSpec(5, 1, 3), seed=3)))
    to_uint8 = lambda x: np.rint(x.numpy()[0] * 255).astype(np.uint8)  # noqa: E731
    np.savez(tmp_path / "inputs.npz", images=images, png=np.array(pngs),
             support_images=to_uint8(task["support_images"]), support_labels=task["support_labels"].numpy()[0],
             query_images=to_uint8(task["query_images"]))
    completed = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(exported), str(tmp_path / "inputs.npz"),
                                str(tmp_path / "outputs.npz")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    served = np.load(tmp_path / "outputs.npz")

    features = model.backbone(images.astype(np.float32) / 255.0).numpy()
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(served["embeddings"], expected, atol=1e-5)
    np.testing.assert_allclose(served["float"], expected, atol=1e-5)

    # PNG path: same drawings preprocessed by Pillow on the host; TF's Lanczos differs by rounding only.
    host = np.stack([decode_png(data) for data in pngs])[..., None].astype(np.float32) / 255.0
    host_features = model.backbone(host).numpy()
    host_embeddings = host_features / np.linalg.norm(host_features, axis=1, keepdims=True)
    assert np.min(np.sum(served["png"] * host_embeddings, axis=1)) > 0.99

    _, logits = model.meta_learn({key: value[0] for key, value in task.items()}, training=False)
    np.testing.assert_allclose(served["logits"], logits.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(served["predictions"], np.argmax(logits.numpy(), axis=-1))


def test_export_command_line(tmp_path, capsys):
    from mssl_tf import cli

    assert cli.main(["export", ENTRY, "--base-dir", str(tmp_path), "--version", "7", "--no-warmup"]) == 0
    version = tmp_path / ENTRY / "7"
    assert (version / "saved_model.pb").is_file()
    assert not (version / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert json.loads((version / "assets.extra" / "mssl_tf.json").read_text())["weights_sha256"] == \
        zoo.read_card(ENTRY)["weights"]["sha256"]
    assert cli.main(["export", str(tmp_path / "nowhere")]) == 2
    assert "neither a zoo entry" in capsys.readouterr().err


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


def test_few_shot_refuses_unbounded_and_gapped_labels_in_the_graph(loaded, exported):
    """The check is in the SavedModel, so the real TF Serving refuses these too (InvalidArgumentError)."""
    few_shot = loaded.signatures["few_shot"]
    support, queries = tf.zeros([2, 28, 28, 1], tf.uint8), tf.zeros([3, 28, 28, 1], tf.uint8)
    for labels, words in (([0, 2**31 - 2], "limit of 1024 classes"), ([0, 2], "every class 0..ways-1"),
                          ([-1, 0], "0..ways-1")):
        peak = peak_rss_bytes()
        with pytest.raises(tf.errors.InvalidArgumentError, match=words):
            few_shot(support_images=support, support_labels=tf.constant(labels, tf.int32), query_images=queries)
        growth = peak_rss_bytes() - peak  # nothing of size ways runs before the checks (2**31 classes: 8 GiB each)
        assert growth < 1 << 30, f"refusing {labels} raised the peak RSS by {growth >> 20} MiB"
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one support example"):
        few_shot(support_images=support[:0], support_labels=tf.zeros([0], tf.int32), query_images=queries)
    logits = few_shot(support_images=support, support_labels=tf.constant([1, 0]), query_images=queries)["logits"]
    assert logits.shape == (3, 2)
    assert int(loaded.few_shot_max_ways[0].numpy()) == export.MAX_WAYS
    assert export.read_metadata(exported)["few_shot_max_ways"] == export.MAX_WAYS


def png_bomb(side: int) -> bytes:
    """A valid grayscale PNG of `side` x `side` blank pixels: a few hundred KB that decode to side² bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\x00" * (side + 1)  # filter byte 0, then the pixels
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_embed_png_reads_the_header_before_decoding(loaded):
    embed_png = loaded.signatures["embed_png"]
    bomb = png_bomb(12000)  # 144 M pixels from about 140 KB
    assert len(bomb) < 1 << 20
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 4194304 pixels"):
        embed_png(png=tf.constant([bomb]))
    for data, words in ((bomb[:20], "cut short"), (b"RIFF" + bomb[4:40], "PNG, JPEG, GIF or BMP")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=words):
            embed_png(png=tf.constant([data]))
    drawing = tf.io.encode_png(tf.fill([105, 105, 1], tf.constant(255, tf.uint8))).numpy()
    assert embed_png(png=tf.constant([drawing, drawing]))["embeddings"].shape == (2, 64)


def test_an_rgb_model_exports_with_its_own_input(tmp_path):
    """A 32x32x3 encoder: the signatures take its shape, and files of any size go through few_shot_png."""
    import io

    from PIL import Image

    from mssl_tf import backbones, input_spec
    from mssl_tf.methods import ProtoNet

    model = ProtoNet(backbones.conv4(input_shape=(32, 32, 3)))
    version = export.export_model(model, tmp_path, "rgb", warmup=True)
    defs = signature_defs(version)
    image = [-1, 32, 32, 3]
    assert describe(defs["serving_default"].inputs) == {"images": ("uint8", image)}
    assert describe(defs["few_shot_png"].inputs) == {
        "support_png": ("string", [-1]), "support_labels": ("int32", [-1]), "query_png": ("string", [-1])}
    metadata = export.read_metadata(version)
    assert metadata["input"]["shape"] == [32, 32, 3] and metadata["input"]["kind"] == "photos"
    files = []
    for size, colour in (((50, 20), "red"), ((13, 77), "blue"), ((40, 40), "green")):
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, "JPEG")
        files.append(buffer.getvalue())
    loaded = tf.saved_model.load(str(version))
    answer = loaded.signatures["few_shot_png"](support_png=tf.constant(files), support_labels=tf.constant([0, 1, 2]),
                                               query_png=tf.constant(files[::-1]))
    np.testing.assert_array_equal(answer["predictions"].numpy(), [2, 1, 0])
    decoded = tf.stack([input_spec.decode_encoded(tf.constant(data), input_spec.photos(32)) for data in files])
    by_arrays = loaded.signatures["few_shot"](support_images=decoded, support_labels=tf.constant([0, 1, 2]),
                                              query_images=decoded[::-1])
    np.testing.assert_allclose(answer["logits"].numpy(), by_arrays["logits"].numpy(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="does not match the encoder's input"):
        export.export_model(model, tmp_path, "wrong", spec=input_spec.photos(28))
