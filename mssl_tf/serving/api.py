"""The three TF Serving calls as functions of the model manager, returning TF Serving's response protos.

The gRPC servicers send these protos as they are; the REST API prints them as JSON the way TF Serving does.
"""

from __future__ import annotations

from mssl_tf.serving._dependencies import require_serving_api

require_serving_api()

from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2, status_pb2  # noqa: E402

from mssl_tf.serving.errors import CODE_NAMES, ServingError  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.models import ModelManager  # noqa: E402
from mssl_tf.serving.tensors import to_ndarray, to_tensor_proto  # noqa: E402

SIGNATURE_DEF_FIELD = "signature_def"


def spec_arguments(model_spec) -> dict:
    """A `ModelSpec` → keyword arguments of `ModelManager.resolve`."""
    if not model_spec.name:
        raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec: the request names no model (model_spec.name)")
    return {
        "name": model_spec.name,
        "version": model_spec.version.value if model_spec.HasField("version") else None,
        "label": model_spec.version_label or None,
    }


def predict(manager: ModelManager, limits: Limits, request: predict_pb2.PredictRequest,
            deadline: float | None = None) -> predict_pb2.PredictResponse:
    """Runs a PredictRequest; `deadline` is a `time.monotonic()` value after which the model is not run."""
    servable = manager.resolve(**spec_arguments(request.model_spec))
    signature_name, _ = servable.signature(request.model_spec.signature_name)
    inputs = {
        name: to_ndarray(proto, name, limits.max_tensor_elements) for name, proto in request.inputs.items()
    }
    outputs = servable.predict(signature_name, inputs, tuple(request.output_filter), deadline)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(to_tensor_proto(value))
    return response


def model_metadata(manager: ModelManager, request: get_model_metadata_pb2.GetModelMetadataRequest):
    fields = set(request.metadata_field)
    if not fields:
        raise ServingError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
    unsupported = sorted(fields - {SIGNATURE_DEF_FIELD})
    if unsupported:
        raise ServingError("INVALID_ARGUMENT", f"Metadata field {unsupported[0]} is not supported")
    servable = manager.resolve(**spec_arguments(request.model_spec))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def model_status(manager: ModelManager, request: get_model_status_pb2.GetModelStatusRequest):
    if not request.HasField("model_spec"):
        raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
    arguments = spec_arguments(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, status in manager.status(**arguments):
        response.model_version_status.add(
            version=version,
            state=get_model_status_pb2.ModelVersionStatus.State.Value(status.state),
            status=status_pb2.StatusProto(
                error_code=CODE_NAMES.index(status.error_code), error_message=status.error_message,
            ),
        )
    return response
