"""TF Serving's REST API: routes, request formats, response shapes (the transport is `rest_server.RestServer`).

    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]             model status
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata    signature defs
    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict     {"instances": [...]} or {"inputs": ...}

Responses and errors are TF Serving's: `{"predictions": ...}` for the row format, `{"outputs": ...}` for the
columnar one, `{"error": "..."}` with the HTTP status TF Serving maps the error's code to.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from urllib.parse import unquote, urlsplit

from mssl_tf.serving._dependencies import require_serving_api

require_serving_api()

import numpy as np  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2  # noqa: E402

from mssl_tf.serving import api  # noqa: E402
from mssl_tf.serving.deadlines import check_deadline  # noqa: E402
from mssl_tf.serving.errors import ServingError  # noqa: E402
from mssl_tf.serving.json_arrays import ParsedArray, loads  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.models import ModelManager  # noqa: E402
from mssl_tf.serving.tensors import NUMPY_DTYPES, dtype_name  # noqa: E402

logger = logging.getLogger("mssl_tf.serving")

# tensorflow_serving/model_servers/http_rest_api_util.cc
PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)


def _json(message) -> dict:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True,
    )


class RestApi:
    """The REST API as a function from (method, path, body) to (HTTP status, JSON document).

    Args:
        manager: the served models.
        limits: request limits (JSON depth, tensor elements).
    """

    def __init__(self, manager: ModelManager, limits: Limits = Limits()):
        self.manager = manager
        self.limits = limits

    def handle(self, method: str, path: str, body: bytes, deadline: float | None = None) -> tuple[int, dict]:
        """Answers one request; `deadline` (a `time.monotonic()` value) passed means DEADLINE_EXCEEDED (504)."""
        try:
            check_deadline(deadline, "while queued for a REST worker (--rest_api_num_threads)")
            return 200, self._route(method, urlsplit(path).path, body, deadline)
        except ServingError as error:
            return error.http_status, {"error": error.message}
        except Exception:  # noqa: BLE001 - answer rather than drop the connection; the details stay in the log
            logger.exception("REST request failed: %s %s", method, path)
            return 500, {"error": "INTERNAL: the server failed on this request; its log has the details"}

    def _route(self, method: str, path: str, body: bytes, deadline: float | None = None) -> dict:
        malformed = ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        if method == "POST":
            match = PREDICT_PATH.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, verb = match.groups()
            spec = self._spec(name, version, label)
            if verb.lower() != "predict":
                raise ServingError(
                    "UNIMPLEMENTED", f":{verb} is not served by mssl-tf serve (it serves :predict); use TF Serving"
                )
            return self._predict(spec, body, deadline)
        if method == "GET":
            match = STATUS_PATH.fullmatch(path)
            if match is None:
                raise malformed
            name, version, label, metadata = match.groups()
            if not name:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            spec = self._spec(name, version, label)
            if metadata:
                request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[api.SIGNATURE_DEF_FIELD])
                request.model_spec.CopyFrom(spec)
                response = api.model_metadata(self.manager, request)
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                response.metadata[api.SIGNATURE_DEF_FIELD].Unpack(signature_map)
                return {"model_spec": _json(response.model_spec), "metadata": {"signature_def": _json(signature_map)}}
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.CopyFrom(spec)
            return _json(api.model_status(self.manager, request))
        raise malformed

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=unquote(name))
        if version is not None and label is not None:
            raise ServingError("INVALID_ARGUMENT", "Both model version and model version label cannot be supplied.")
        if version is not None:
            try:
                spec.version.value = int(version)
            except ValueError:
                raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version} to numeric.") from None
        if label is not None:
            spec.version_label = unquote(label)
        return spec

    def _predict(self, spec, body: bytes, deadline: float | None = None) -> dict:
        if not body.strip():
            raise ServingError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
        document = loads(body, self.limits.max_json_depth)  # large numeric arrays straight to numpy
        if document is None:  # the general path (every error is its)
            self.limits.check_json_depth(body)
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as error:
                raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {error}") from None
        if not isinstance(document, dict):
            raise ServingError("INVALID_ARGUMENT",
                               "The request body must be a JSON object with 'instances' or 'inputs'")
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
        rows, columns = "instances" in document, "inputs" in document
        if rows == columns:
            raise ServingError(
                "INVALID_ARGUMENT",
                "Missing 'inputs' or 'instances' key" if not rows
                else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists",
            )
        servable = self.manager.resolve(**api.spec_arguments(spec))
        signature_name, signature_def = servable.signature(signature_name)
        infos = signature_def.inputs
        inputs = self._rows(document["instances"], infos) if rows else self._columns(document["inputs"], infos)
        outputs = servable.predict(signature_name, inputs, deadline=deadline)
        if columns:
            if len(outputs) == 1:
                ((name, value),) = outputs.items()
                return {"outputs": _to_json(name, value)}
            return {"outputs": {name: _to_json(name, value) for name, value in outputs.items()}}
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return {"predictions": _to_json(name, value)}
        sizes = {name: (len(value) if np.ndim(value) else None) for name, value in outputs.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"the row format needs every output to have the same batch size, got {sizes}; send 'inputs' "
                "(columnar format) instead",
            )
        columns_json = {name: _to_json(name, value) for name, value in outputs.items()}
        return {"predictions": [{name: column[row] for name, column in columns_json.items()}
                                for row in range(next(iter(sizes.values())))]}

    def _rows(self, instances, infos) -> dict:
        if isinstance(instances, ParsedArray):
            if len(infos) == 1:  # what the loop below does for a list of non-object instances
                ((name, info),) = infos.items()
                return {name: _to_array(instances, info, name)}
            instances = instances.as_json_value()
        if not isinstance(instances, list) or not instances:
            raise ServingError("INVALID_ARGUMENT",
                               "'instances' must be a non-empty JSON array, one element per example")
        names = sorted(infos)
        values = {name: [] for name in names}
        for index, instance in enumerate(instances):
            if isinstance(instance, dict) and not _is_b64(instance):
                if set(instance) != set(names):
                    raise ServingError(
                        "INVALID_ARGUMENT",
                        f"instance {index} has the inputs {sorted(instance)}, but the signature takes {names}",
                    )
                for name in names:
                    values[name].append(instance[name])
            elif len(names) == 1:
                values[names[0]].append(instance)
            else:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"the signature takes {len(names)} inputs ({', '.join(names)}): each instance must be an object "
                    "with one key per input, or send 'inputs' (columnar format) when inputs differ in batch size",
                )
        return {name: _to_array(values[name], infos[name], name) for name in names}

    def _columns(self, inputs, infos) -> dict:
        names = sorted(infos)
        if isinstance(inputs, dict) and not _is_b64(inputs):
            return {name: _to_array(value, infos.get(name), name) for name, value in inputs.items()}
        if len(names) != 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"the signature takes {len(names)} inputs ({', '.join(names)}): 'inputs' must be an object keyed by "
                "input name",
            )
        return {names[0]: _to_array(inputs, infos[names[0]], names[0])}


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _decode_strings(value):
    if _is_b64(value):
        if not isinstance(value["b64"], str):
            raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value['b64'])} is not a base64 string")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise ServingError("INVALID_ARGUMENT", f"Unable to base64 decode {{\"b64\": ...}}: {error}; send "
                                                   "standard base64 (RFC 4648, with padding)") from None
    if isinstance(value, list):
        return [_decode_strings(item) for item in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ServingError("INVALID_ARGUMENT", f"JSON Value: {json.dumps(value)} is not of expected type: string")


def _to_array(value, tensor_info, name: str) -> np.ndarray:
    """A JSON value as an array of the signature input's dtype, refusing values that dtype cannot hold."""
    if tensor_info is None:  # an extra input: let the signature check name it
        return np.asarray(0)
    dtype = NUMPY_DTYPES.get(tensor_info.dtype)
    if dtype is None:
        raise ServingError("INVALID_ARGUMENT", f"input {name} has dtype {dtype_name(tensor_info.dtype)}, "
                                               "which this server cannot read from JSON")
    if isinstance(value, ParsedArray):
        if tensor_info.dtype != types_pb2.DT_STRING:
            value = value.array  # what np.asarray makes of the nested lists below
        else:
            value = value.as_json_value()
    if tensor_info.dtype == types_pb2.DT_STRING:
        decoded = _decode_strings(value)
        array = np.empty(np.shape(decoded) if isinstance(decoded, list) else (), object)
        array[...] = decoded if isinstance(decoded, list) else decoded
        return array
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as error:
        raise ServingError(
            "INVALID_ARGUMENT", f"input {name} is not a rectangular array of numbers (every row must have the same "
                                f"length): {error}",
        ) from None
    expected = dtype_name(tensor_info.dtype)
    if array.size == 0:
        return array.astype(dtype)
    kind = array.dtype.kind
    if kind == "O":
        raise ServingError("INVALID_ARGUMENT", f"input {name} is ragged or mixes types; expected a rectangular array "
                                               f"of {expected}")
    allowed = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}[dtype.kind]
    if kind not in allowed:
        example = array.reshape(-1)[0]
        raise ServingError(
            "INVALID_ARGUMENT",
            f"JSON Value: {json.dumps(example.item() if hasattr(example, 'item') else example)} is not of expected "
            f"type: {expected} (input {name})",
        )
    if dtype.kind in "iu":
        bounds = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < bounds.min or high > bounds.max:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input {name} has values in [{low}, {high}], outside the range of {expected} "
                f"[{bounds.min}, {bounds.max}]",
            )
    return array.astype(dtype, copy=False)


def _to_json(name: str, value: np.ndarray):
    if value.dtype == object:  # strings: text, or base64 for outputs named *_bytes as in TF Serving
        def convert(item):
            if isinstance(item, list):
                return [convert(element) for element in item]
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(item).decode("ascii")}
            try:
                return item.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(item).decode("ascii")}

        return convert(value.tolist())
    return value
