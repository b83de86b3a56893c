"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio, built from tensorflow-serving-api stubs."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from mssl_tf.serving._dependencies import require_serving_api

require_serving_api()

import grpc  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc, status_pb2,
)

from mssl_tf.serving import api  # noqa: E402
from mssl_tf.serving.config import TlsConfig, model_configs_from_proto  # noqa: E402
from mssl_tf.serving.errors import ServingError  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.models import ModelManager  # noqa: E402

logger = logging.getLogger("mssl_tf.serving")


def _answer(context, call):
    """Runs `call()`; a ServingError becomes its gRPC status, anything else INTERNAL with the error's text."""
    try:
        return call()
    except ServingError as error:
        context.abort(getattr(grpc.StatusCode, error.code), error.message)
    except Exception as error:  # noqa: BLE001 - the client gets the reason instead of grpc's bare UNKNOWN
        logger.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def __init__(self, manager: ModelManager, limits: Limits):
        self.manager = manager
        self.limits = limits

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        return _answer(context, lambda: api.predict(self.manager, self.limits, request))

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _answer(context, lambda: api.model_metadata(self.manager, request))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, and HandleReloadConfigRequest to replace the served models at run time."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        return _answer(context, lambda: api.model_status(self.manager, request))

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        def reload():
            try:
                configs = model_configs_from_proto(request.config)
            except ValueError as error:
                raise ServingError("INVALID_ARGUMENT", str(error)) from None
            self.manager.reload_config(configs)
            return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))

        return _answer(context, reload)


def start_grpc_server(manager: ModelManager, host: str, port: int, limits: Limits, tls: TlsConfig | None = None,
                      max_threads: int = 16, channel_arguments=(), unix_socket: str = ""):
    """Starts a gRPC server; returns `(server, bound_port)` (`port=0` binds an ephemeral port)."""
    options = [
        ("grpc.max_receive_message_length", limits.max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),  # a port already in use is an error, not a silently shared port
        *channel_arguments,
    ]
    server = grpc.server(ThreadPoolExecutor(max_threads, thread_name_prefix="grpc"), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(manager, limits), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(tls.server_key.encode(), tls.server_cert.encode())],
                root_certificates=tls.custom_ca.encode() or None,
                require_client_auth=tls.client_verify,
            )
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
        if unix_socket:
            server.add_insecure_port(f"unix:{unix_socket}")
    except RuntimeError as error:
        raise OSError(f"gRPC could not listen on {address}: {error}; is the port in use? (--port)") from error
    if not bound:
        raise OSError(f"gRPC could not listen on {address}; is the port in use? (--port)")
    server.start()
    return server, bound
