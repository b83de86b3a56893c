"""Clients for a served encoder: `EmbeddingClient` over gRPC, `RestClient` over HTTP.

Both speak TF Serving's protocols, so they work against `tensorflow_model_server` and `mssl-tf serve` alike, and
both raise `ServingError` (with TF Serving's code name and message) when a request fails.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from urllib.parse import quote, urlsplit

import numpy as np

from mssl_tf.serving._dependencies import require_serving_api
from mssl_tf.serving.errors import HTTP_STATUS, ServingError, code_from_number

require_serving_api()

import grpc  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
)

from mssl_tf.serving.tensors import (  # noqa: E402
    NUMPY_DTYPES, dtype_name, dumps_json, signature_shape, to_ndarray, to_tensor_proto,
)

FEW_SHOT_SIGNATURE = "few_shot"
FEW_SHOT_FILES_SIGNATURE = "few_shot_png"
EMBED_FILES_SIGNATURE = "embed_png"
TEXT_EMBED_SIGNATURE = "serving_default"
STATES = {value: name for name, value in get_model_status_pb2.ModelVersionStatus.State.items()}


def _conform(array, dtype: np.dtype, shape, name: str) -> np.ndarray:
    """Casts `array` to the signature's dtype when no value changes, and adds a trailing channel axis if missing."""
    array = np.asarray(array)
    if array.dtype != dtype and dtype != np.dtype(object):
        converted = array.astype(dtype)
        if array.size and not np.array_equal(converted, array):
            raise ValueError(
                f"{name} is {array.dtype} but the signature takes {dtype.name}, and converting would change values "
                f"(e.g. {array.reshape(-1)[0]!r}); pass {dtype.name} values"
            )
        array = converted
    if shape is not None and array.ndim == len(shape) - 1 and shape[-1] == 1:
        array = array[..., None]
    return array


def utf8_array(sentences) -> np.ndarray:
    """Sentences (str or bytes) → a 1-D object array of UTF-8 bytes: a `DT_STRING` tensor's values."""
    return np.array([text if isinstance(text, bytes) else str(text).encode("utf-8") for text in sentences],
                    dtype=object)


def _signatures_as_dict(signature_map) -> dict:
    """SignatureDefMap → `{signature: {"inputs": {name: {"dtype", "shape"}}, "outputs": {...}, "method_name"}}`."""
    def tensors(infos):
        return {name: {"dtype": dtype_name(info.dtype), "shape": signature_shape(info)} for name, info in infos.items()}

    return {
        name: {"inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs),
               "method_name": signature.method_name}
        for name, signature in signature_map.signature_def.items()
    }


class EmbeddingClient:
    """Embeddings and few-shot predictions from a served encoder over gRPC.

    Args:
        host_port: the server's gRPC address, e.g. `"127.0.0.1:8500"`.
        model_name: the served model's name.
        signature: the embedding signature.
        version: ask for this version (default: the latest the server has).
        version_label: ask for the version with this label (e.g. `"stable"`) instead.
        timeout: seconds per call.
        root_certificates: PEM of the CA (or the self-signed certificate) to trust: connects over TLS.
        private_key: PEM client key, for servers that verify clients (with `certificate_chain`).
        certificate_chain: PEM client certificate.
        max_message_bytes: largest response accepted.

    Example:
        >>> with EmbeddingClient("127.0.0.1:8500", "omniglot_encoder") as client:
        ...     embeddings = client.embed(images)                 # uint8 [N, 28, 28, 1] → float32 [N, 64]
        ...     result = client.few_shot(support_images, support_labels, query_images)
        ...     result["predictions"]                             # int32 [queries]
    """

    def __init__(self, host_port: str, model_name: str, signature: str = "serving_default", version: int | None = None,
                 version_label: str | None = None, timeout: float = 30.0, root_certificates: bytes | None = None,
                 private_key: bytes | None = None, certificate_chain: bytes | None = None,
                 max_message_bytes: int = 256 << 20):
        if version is not None and version_label:
            raise ValueError("pass version or version_label, not both")
        self.model_name, self.signature = model_name, signature
        self.version, self.version_label = version, version_label
        self.timeout = timeout
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self.channel = grpc.secure_channel(host_port, credentials, options)
        else:
            self.channel = grpc.insecure_channel(host_port, options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._signatures = None
        self.last_version = None  # the version that answered the last predict call

    def _spec(self, spec, signature: str = "") -> None:
        spec.name = self.model_name
        spec.signature_name = signature
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label:
            spec.version_label = self.version_label

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code().name, error.details() or "") from None

    def signatures(self, refresh: bool = False) -> dict:
        """The model's signatures (see `metadata()`), cached after the first call."""
        if self._signatures is None or refresh:
            self._signatures = self.metadata()["signatures"]
        return self._signatures

    def metadata(self) -> dict:
        """`{"name", "version", "signatures": {name: {"inputs": {input: {"dtype", "shape"}}, "outputs": ...}}}`."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"name": response.model_spec.name, "version": response.model_spec.version.value,
                "signatures": _signatures_as_dict(signature_map)}

    def status(self) -> list[dict]:
        """`[{"version": int, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}, ...]`."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request)
        return [{"version": status.version, "state": STATES[status.state],
                 "error_code": code_from_number(status.status.error_code),
                 "error_message": status.status.error_message} for status in response.model_version_status]

    def predict(self, inputs: dict, signature: str | None = None, output_filter=(), conform: bool = True) -> dict:
        """Runs a signature on `{input_name: array}`; returns `{output_name: np.ndarray}`.

        With `conform`, inputs are cast to the signature's dtypes when that changes no value (e.g. int64 0..255 to
        uint8) and given the trailing channel axis the signature has; otherwise they are sent as they are.
        """
        signature = self.signature if signature is None else signature
        expected = self.signatures().get(signature, {}).get("inputs", {}) if conform else {}
        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, signature)
        for name, value in inputs.items():
            info = expected.get(name)
            array = (_conform(value, NUMPY_DTYPES_BY_NAME[info["dtype"]], info["shape"], name)
                     if info and info["dtype"] in NUMPY_DTYPES_BY_NAME else np.asarray(value))
            request.inputs[name].CopyFrom(to_tensor_proto(array))
        response = self._call(self._predictions.Predict, request)
        self.last_version = response.model_spec.version.value
        return {name: to_ndarray(proto, name) for name, proto in response.outputs.items()}

    def embed(self, images) -> np.ndarray:
        """Embeddings of a batch of images: the embedding signature's output (`embeddings`, or its only one)."""
        inputs = self.signatures().get(self.signature, {}).get("inputs")
        if not inputs:
            raise ValueError(f"model {self.model_name} has no signature {self.signature!r}; "
                             f"it has {sorted(self.signatures())}")
        if len(inputs) != 1:
            raise ValueError(
                f"signature {self.signature!r} takes {len(inputs)} inputs ({sorted(inputs)}); use predict()"
            )
        outputs = self.predict({next(iter(inputs)): images})
        return outputs["embeddings"] if "embeddings" in outputs else next(iter(outputs.values()))

    def few_shot(self, support_images, support_labels, query_images) -> dict:
        """Classifies `query_images` by the labeled support set: `{"logits": [Q, ways], "predictions": [Q]}`."""
        return self.predict(
            {"support_images": support_images, "support_labels": support_labels, "query_images": query_images},
            signature=FEW_SHOT_SIGNATURE,
        )

    def embed_sentences(self, sentences) -> np.ndarray:
        """Embeddings of sentences (str or bytes) from a text model, which tokenizes them itself."""
        return self.predict({"sentences": utf8_array(sentences)}, signature=TEXT_EMBED_SIGNATURE)["embeddings"]

    def few_shot_sentences(self, support_sentences, support_labels, query_sentences) -> dict:
        """A text model's `few_shot`: `{"logits": [Q, ways], "predictions": [Q]}`."""
        return self.predict({"support_sentences": utf8_array(support_sentences), "support_labels": support_labels,
                             "query_sentences": utf8_array(query_sentences)}, signature=FEW_SHOT_SIGNATURE)

    def embed_files(self, files) -> np.ndarray:
        """Embeddings of encoded image files (PNG, JPEG, GIF or BMP bytes of any size), decoded by the server."""
        return self.predict({"png": np.array(list(files), dtype=object)}, signature=EMBED_FILES_SIGNATURE)["embeddings"]

    def few_shot_files(self, support_files, support_labels, query_files) -> dict:
        """`few_shot` on encoded image files (any size): `{"logits": [Q, ways], "predictions": [Q]}`."""
        return self.predict(
            {"support_png": np.array(list(support_files), dtype=object), "support_labels": support_labels,
             "query_png": np.array(list(query_files), dtype=object)},
            signature=FEW_SHOT_FILES_SIGNATURE,
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


NUMPY_DTYPES_BY_NAME = {dtype_name(enum): dtype for enum, dtype in NUMPY_DTYPES.items()}


class RestClient:
    """The same calls over TF Serving's REST API (JSON), with the standard library's HTTP client.

    Args:
        base_url: e.g. `"http://127.0.0.1:8501"` (or `https://...` with `ssl_context`).
        model_name: the served model's name.
        signature: the embedding signature.
        version: ask for this version; `version_label`: for the version with this label.
        timeout: seconds per call.
        ssl_context: for HTTPS (e.g. `ssl.create_default_context(cadata=certificate_pem)`).

    One client keeps one keep-alive connection per thread. A failed request raises `ServingError` with the
    server's message; REST carries only the HTTP status, so its `code` is the first code TF Serving maps to that
    status (400 → INVALID_ARGUMENT also for FAILED_PRECONDITION; compare `http_status` to tell them apart).
    """

    def __init__(self, base_url: str, model_name: str, signature: str = "serving_default", version: int | None = None,
                 version_label: str | None = None, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"base_url {base_url!r} must start with http:// or https://")
        self.scheme, self.netloc = parts.scheme, parts.netloc
        self.model_name, self.signature = model_name, signature
        self.version, self.version_label = version, version_label
        self.timeout, self.ssl_context = timeout, ssl_context
        self._local = threading.local()
        path = f"/v1/models/{quote(model_name, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif version_label:
            path += f"/labels/{quote(version_label, safe='')}"
        self.model_path = path

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self.scheme == "https":
                connection = http.client.HTTPSConnection(self.netloc, timeout=self.timeout, context=self.ssl_context)
            else:
                connection = http.client.HTTPConnection(self.netloc, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def request(self, method: str, path: str, document=None):
        """Sends one request; returns the decoded JSON answer or raises ServingError from `{"error": ...}`."""
        body = None if document is None else dumps_json(document).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):  # a kept-alive connection the server closed is reopened once
            connection = self._connection()
            try:
                connection.request(method, path, body, headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        answer = json.loads(data) if data else {}
        if response.status != 200:
            message = answer.get("error", data.decode("utf-8", "replace")) if isinstance(answer, dict) else str(answer)
            code = next((name for name, status in HTTP_STATUS.items() if status == response.status), "UNKNOWN")
            error = ServingError(code, message)
            error.http_status_received = response.status
            raise error
        return answer

    def status(self) -> dict:
        return self.request("GET", self.model_path)

    def metadata(self) -> dict:
        return self.request("GET", self.model_path + "/metadata")

    def predict(self, inputs, signature: str | None = None, rows: bool = False):
        """`:predict` in the columnar format (`{"inputs": ...}` → `"outputs"`) or, with `rows`, the row format
        (`{"instances": ...}` → `"predictions"`). Arrays go as nested lists; the answer comes back as numpy arrays
        (a dict of them for several outputs; the row format's per-example objects are stacked back by output)."""
        def listed(value):
            return np.asarray(value) if not isinstance(value, (list, dict)) else value

        document = {"signature_name": signature or self.signature}
        if rows:
            if isinstance(inputs, dict):
                names = list(inputs)
                columns = {name: listed(value) for name, value in inputs.items()}
                document["instances"] = [dict(zip(names, values)) for values in zip(*columns.values())]
            else:
                document["instances"] = listed(inputs)
        else:
            document["inputs"] = {name: listed(value) for name, value in inputs.items()} if isinstance(
                inputs, dict) else listed(inputs)
        answer = self.request("POST", self.model_path + ":predict", document)
        result = answer["predictions"] if rows else answer["outputs"]
        if isinstance(result, dict):
            return {name: np.asarray(value) for name, value in result.items()}
        if rows and result and isinstance(result[0], dict):
            return {name: np.asarray([row[name] for row in result]) for name in result[0]}
        return np.asarray(result)

    def embed(self, images, rows: bool = False) -> np.ndarray:
        result = self.predict(np.asarray(images), rows=rows)
        return np.asarray(result["embeddings"] if isinstance(result, dict) else result, np.float32)

    def few_shot(self, support_images, support_labels, query_images) -> dict:
        return self.predict({"support_images": support_images, "support_labels": support_labels,
                             "query_images": query_images}, signature=FEW_SHOT_SIGNATURE)

    def embed_sentences(self, sentences) -> np.ndarray:
        """Embeddings of sentences from a text model (sent as JSON strings)."""
        texts = [text.decode("utf-8") if isinstance(text, bytes) else str(text) for text in sentences]
        result = self.predict({"sentences": texts}, signature=TEXT_EMBED_SIGNATURE)
        return np.asarray(result["embeddings"] if isinstance(result, dict) else result, np.float32)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
