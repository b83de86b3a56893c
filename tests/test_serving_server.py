"""The embedded server over real sockets on 127.0.0.1: predictions, metadata, status, labels, errors, batching."""

import json
import socket
import threading

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="the serving tests need the serving extra: pip install 'mssl-tf[serving]'")

import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc,
)

from mssl_tf.serving import EmbeddingClient, ModelServer, RestClient, ServingError  # noqa: E402
from mssl_tf.serving.config import BatchingOptions, read_model_server_config  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.models import read_meta_graph  # noqa: E402
from mssl_tf.serving.tensors import to_tensor_proto  # noqa: E402
from mssl_tf.serving.testing import reference_embeddings, write_test_model  # noqa: E402

LIMITS = Limits(max_request_bytes=2 << 20, max_json_depth=16, max_tensor_elements=100 * 28 * 28)


def images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Model "encoder" with versions 1 and 2 (different weights) and model "second" with version 5."""
    base = tmp_path_factory.mktemp("export")
    paths = {1: write_test_model(base / "encoder", 1), 2: write_test_model(base / "encoder", 2)}
    write_test_model(base / "second", 5, seed=50)
    config = base / "models.config"
    config.write_text(f"""
        model_config_list {{
          config {{
            name: "encoder" base_path: "{base / 'encoder'}" model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 2 }}
          }}
          config {{ name: "second" base_path: "{base / 'second'}" model_platform: "tensorflow" }}
        }}""")
    return {"base": base, "paths": paths, "config": config}


@pytest.fixture(scope="module")
def server(exported):
    with ModelServer(read_model_server_config(exported["config"]), port=0, rest_api_port=0, poll_wait_seconds=0,
                     limits=LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server):
    grpc_client = EmbeddingClient(f"127.0.0.1:{server.grpc_port}", "encoder", timeout=10)
    rest_client = RestClient(f"http://127.0.0.1:{server.rest_port}", "encoder", timeout=10)
    yield grpc_client, rest_client
    grpc_client.close()
    rest_client.close()


def test_grpc_and_rest_predictions_equal_in_process_outputs(exported, clients):
    grpc_client, rest_client = clients
    loaded = tf.saved_model.load(str(exported["paths"][2]))  # latest version = 2
    batch = images(6)
    expected = loaded.signatures["serving_default"](images=tf.constant(batch))["embeddings"].numpy()
    np.testing.assert_allclose(expected, reference_embeddings(batch, seed=2), atol=1e-6)  # the model is what we think

    np.testing.assert_array_equal(grpc_client.embed(batch), expected)
    assert grpc_client.last_version == 2
    np.testing.assert_array_equal(rest_client.embed(batch), expected)  # columnar: {"inputs": ...}
    np.testing.assert_array_equal(rest_client.embed(batch, rows=True), expected)  # row: {"instances": ...}
    np.testing.assert_array_equal(grpc_client.embed(batch[:, :, :, 0]), expected)  # channel axis added by the client

    support, labels, queries = batch[:4], np.array([0, 1, 2, 1], np.int32), images(3, seed=1)
    expected = {name: value.numpy() for name, value in loaded.signatures["few_shot"](
        support_images=tf.constant(support), support_labels=tf.constant(labels), query_images=tf.constant(queries),
    ).items()}
    for answer in (grpc_client.few_shot(support, labels, queries), rest_client.few_shot(support, labels, queries)):
        np.testing.assert_array_equal(np.asarray(answer["logits"], np.float32), expected["logits"])
        np.testing.assert_array_equal(answer["predictions"], expected["predictions"])


def test_metadata_and_status_are_tf_servings(exported, server, clients):
    grpc_client, rest_client = clients
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_client.channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "encoder"
    response = stub.GetModelMetadata(request, timeout=10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert dict(signature_map.signature_def) == dict(read_meta_graph(exported["paths"][2]).signature_def)
    assert response.model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(model_spec=request.model_spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata_field" in caught.value.details()

    summary = grpc_client.metadata()["signatures"]
    assert summary["serving_default"]["inputs"] == {"images": {"dtype": "uint8", "shape": [-1, 28, 28, 1]}}
    assert summary["few_shot"]["outputs"]["predictions"] == {"dtype": "int32", "shape": [-1]}

    document = rest_client.metadata()
    assert document["model_spec"] == {"name": "encoder", "signature_name": "", "version": "2"}
    images_input = document["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["images"]
    assert images_input["dtype"] == "DT_UINT8"
    assert [dim["size"] for dim in images_input["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]

    ok = {"error_code": "OK", "error_message": ""}
    assert rest_client.status() == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok}, {"version": "1", "state": "AVAILABLE", "status": ok},
    ]}
    assert rest_client.request("GET", "/v1/models/encoder/labels/stable") == {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert grpc_client.status()[0] == {"version": 2, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}


def test_versions_labels_and_a_second_model(server):
    batch = images(3, seed=2)
    address, url = f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.rest_port}"
    for version, label in ((1, "stable"), (2, "canary")):
        expected = reference_embeddings(batch, seed=version)
        for client in (EmbeddingClient(address, "encoder", version=version),
                       EmbeddingClient(address, "encoder", version_label=label)):
            np.testing.assert_allclose(client.embed(batch), expected, atol=1e-6)
            assert client.last_version == version
            client.close()
        for client in (RestClient(url, "encoder", version=version), RestClient(url, "encoder", version_label=label)):
            np.testing.assert_allclose(client.embed(batch), expected, atol=1e-6)
    with EmbeddingClient(address, "second") as second:
        np.testing.assert_allclose(second.embed(batch), reference_embeddings(batch, seed=50), atol=1e-6)
        assert second.last_version == 5


def grpc_predict(server, inputs, model="encoder", signature="", version=None, label=None):
    """A raw Predict call (no client-side conversion), for requests the client would refuse to build."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value if not isinstance(value, np.ndarray) else to_tensor_proto(value))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=10)
        except grpc.RpcError as error:
            return error.code().name, error.details()
    return "OK", ""


def rest_post(server, path, body: bytes):
    connection = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
    with connection, connection.makefile("rb") as answer:
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n".encode() + body)
        connection.shutdown(socket.SHUT_WR)
        status = int(answer.readline().split()[1])
        while answer.readline().strip():
            pass
        return status, json.loads(answer.read() or b"{}")


GOOD = {"images": images(2)}
FLOATS = {"images": images(2).astype(np.float32)}
FEW_SHOT = {"support_images": images(2), "support_labels": np.array([0, 1], np.int32), "query_images": images(1)}

GRPC_CASES = [  # (inputs, model, signature, version, label) → code, words in the message
    (GOOD, "nobody", "", None, None, "NOT_FOUND", "Servable not found for request: Latest(nobody)"),
    (GOOD, "encoder", "", 7, None, "NOT_FOUND", "Servable not found for request: Specific(encoder, 7)"),
    (GOOD, "encoder", "", None, "nightly", "INVALID_ARGUMENT", "Unrecognized servable version label: nightly"),
    (GOOD, "encoder", "classify", None, None, "FAILED_PRECONDITION", 'Serving signature key "classify" not found'),
    ({}, "encoder", "", None, None, "INVALID_ARGUMENT", "Missing but required: {images}"),
    ({**GOOD, "extra": images(1)}, "encoder", "", None, None, "INVALID_ARGUMENT", "Sent extra: {extra}"),
    ({"pictures": images(2)}, "encoder", "", None, None, "INVALID_ARGUMENT", "alias not found in signature: pictures"),
    (FLOATS, "encoder", "", None, None, "INVALID_ARGUMENT", "to be uint8 but float32 is provided"),
    ({"images": images(2)[:, :20]}, "encoder", "", None, None, "INVALID_ARGUMENT",
     "shape [2,20,28,1] but the signature"),
    ({"images": images(101)}, "encoder", "", None, None, "INVALID_ARGUMENT", "--max_tensor_elements"),
    ({**FEW_SHOT, "support_labels": np.array([0.0, 1.0], np.float32)}, "encoder", "few_shot", None, None,
     "INVALID_ARGUMENT", "to be int32 but float32"),
    ({"images": np.zeros((2700, 28, 28, 1), np.uint8)}, "encoder", "", None, None, "RESOURCE_EXHAUSTED", ""),
]


@pytest.mark.parametrize("inputs, model, signature, version, label, code, words", GRPC_CASES)
def test_bad_grpc_requests_get_tf_serving_codes_and_the_server_keeps_answering(
        server, inputs, model, signature, version, label, code, words):
    assert grpc_predict(server, inputs, model, signature, version, label)[0] == code
    assert words in grpc_predict(server, inputs, model, signature, version, label)[1]
    assert grpc_predict(server, GOOD) == ("OK", "")
    assert grpc_predict(server, FEW_SHOT, signature="few_shot") == ("OK", "")


def rows(array):
    return array.tolist()


REST_CASES = [  # (path, body) → HTTP status, words in {"error": ...}
    ("/v1/models/nobody:predict", {"instances": rows(images(1))}, 404,
     "Servable not found for request: Latest(nobody)"),
    ("/v1/models/encoder/versions/7:predict", {"instances": rows(images(1))}, 404, "Specific(encoder, 7)"),
    ("/v1/models/encoder/labels/nightly:predict", {"instances": rows(images(1))}, 400, "Unrecognized servable version"),
    ("/v1/models/encoder:predict", {"signature_name": "nope", "instances": rows(images(1))}, 400,
     'Serving signature key "nope" not found'),
    ("/v1/models/encoder:predict", {"signature_name": 3, "instances": []}, 400, "must be a string"),
    ("/v1/models/encoder:predict", {"instances": [[[[1.5]] * 28] * 28]}, 400, "is not of expected type: uint8"),
    ("/v1/models/encoder:predict", {"instances": [[[[300]] * 28] * 28]}, 400, "outside the range of uint8"),
    ("/v1/models/encoder:predict", {"instances": [[[0]] * 28, [[0]] * 27]}, 400, "rectangular"),
    ("/v1/models/encoder:predict", {"inputs": rows(images(1)[:, :, :3])}, 400, "shape [1,28,3,1] but the signature"),
    ("/v1/models/encoder:predict", {"inputs": {"images": rows(images(1)), "more": [1]}}, 400, "Sent extra: {more}"),
    ("/v1/models/encoder:predict", {"instances": [], "inputs": []}, 400, "only one of 'inputs' or 'instances'"),
    ("/v1/models/encoder:predict", {"nothing": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/encoder:predict", {"signature_name": "few_shot", "instances": [{"support_images": 1}]}, 400,
     "signature takes ['query_images', 'support_images', 'support_labels']"),
    ("/v1/models/encoder:predict", {"inputs": [[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]}, 400, "--max_json_depth"),
    ("/v1/models/encoder:classify", {"examples": []}, 501, "serves :predict"),
    ("/v1/models/encoder/versions/x:predict", {}, 400, "Malformed request"),
]


@pytest.mark.parametrize("path, document, status, words", REST_CASES)
def test_bad_rest_requests_get_tf_serving_statuses_and_the_server_keeps_answering(
        server, path, document, status, words):
    answer_status, answer = rest_post(server, path, json.dumps(document).encode())
    assert answer_status == status and words in answer["error"], answer
    good_status, good = rest_post(server, "/v1/models/encoder:predict",
                                  json.dumps({"instances": rows(images(1))}).encode())
    assert good_status == 200 and np.shape(good["predictions"]) == (1, 64)


def test_rest_body_limits(server):
    assert rest_post(server, "/v1/models/encoder:predict", b"{not json")[0] == 400
    assert "JSON Parse error" in rest_post(server, "/v1/models/encoder:predict", b"{not json")[1]["error"]
    status, answer = rest_post(server, "/v1/models/encoder:predict", b" " * (LIMITS.max_request_bytes + 1))
    assert status == 413 and "--max_request_bytes" in answer["error"]
    # The answer comes from the headers alone: a client that has sent no body yet already reads the 413.
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as connection:
        connection.sendall(b"POST /v1/models/encoder:predict HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: %d\r\n\r\n" % (10 * LIMITS.max_request_bytes))
        assert connection.recv(64).startswith(b"HTTP/1.1 413")
    with RestClient(f"http://127.0.0.1:{server.rest_port}", "nobody") as missing:
        with pytest.raises(ServingError) as caught:
            missing.status()
    assert caught.value.code == "NOT_FOUND" and caught.value.message == "Could not find any versions of model nobody"


def test_batching_merges_concurrent_embedding_requests_but_not_few_shot(exported):
    batching = BatchingOptions(max_batch_size=32, batch_timeout_micros=100_000, num_batch_threads=1)
    with ModelServer(read_model_server_config(exported["config"]), port=0, poll_wait_seconds=0,
                     batching=batching) as batched:
        servable = batched.manager.resolve("encoder")
        assert set(servable.schedulers) == {"serving_default"}  # few_shot's rows are not independent examples
        address = f"127.0.0.1:{batched.grpc_port}"
        batches = [images(3, seed=10 + index) for index in range(6)]
        results, errors = [None] * len(batches), []
        barrier = threading.Barrier(len(batches))

        def embed(index):
            with EmbeddingClient(address, "encoder") as client:
                client.signatures()
                barrier.wait()
                try:
                    results[index] = client.embed(batches[index])
                except ServingError as error:
                    errors.append(error)

        threads = [threading.Thread(target=embed, args=(index,)) for index in range(len(batches))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        for batch, result in zip(batches, results):
            np.testing.assert_allclose(result, reference_embeddings(batch, seed=2), atol=1e-6)
        scheduler = servable.schedulers["serving_default"]
        assert scheduler.tasks_run == len(batches) and scheduler.batches_run < len(batches)
        with EmbeddingClient(address, "encoder") as client:
            answer = client.few_shot(images(2), [0, 1], images(2, seed=3))
            assert answer["logits"].shape == (2, 2)
