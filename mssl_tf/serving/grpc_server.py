"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio, built from tensorflow-serving-api stubs."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from mssl_tf.serving._dependencies import require_serving_api

require_serving_api()

import grpc  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc, status_pb2,
)

from mssl_tf.serving import api  # noqa: E402
from mssl_tf.serving.config import TlsConfig, model_configs_from_proto  # noqa: E402
from mssl_tf.serving.deadlines import check_deadline, deadline_after  # noqa: E402
from mssl_tf.serving.errors import ServingError  # noqa: E402
from mssl_tf.serving.limits import Limits  # noqa: E402
from mssl_tf.serving.models import ModelManager  # noqa: E402
from mssl_tf.serving.tls import grpc_server_credentials  # noqa: E402

logger = logging.getLogger("mssl_tf.serving")


def _answer(context, call):
    """Runs `call()`; a ServingError becomes its gRPC status, anything else INTERNAL (the details go to the log)."""
    try:
        return call()
    except ServingError as error:
        context.abort(getattr(grpc.StatusCode, error.code), error.message)
    except Exception:  # noqa: BLE001 - INTERNAL rather than grpc's bare UNKNOWN; no server internals to the client
        logger.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, "the server failed on this request; its log has the details")


def _deadline(context) -> float | None:
    """The call's deadline as a `time.monotonic()` value (None when the client set none)."""
    remaining = context.time_remaining()
    return deadline_after(remaining) if remaining is not None and remaining < 1e8 else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference answer UNIMPLEMENTED."""

    def __init__(self, manager: ModelManager, limits: Limits):
        self.manager = manager
        self.limits = limits

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        def predict():
            deadline = _deadline(context)
            check_deadline(deadline, "while queued for a gRPC thread (--grpc_max_threads)")
            return api.predict(self.manager, self.limits, request, deadline)

        return _answer(context, predict)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _answer(context, lambda: api.model_metadata(self.manager, request))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, and HandleReloadConfigRequest to replace the served models at run time.

    Args:
        manager: the served models.
        allow_reload: answer HandleReloadConfigRequest (off by default: any client that reaches the port could
            otherwise unload every model or load one from any path); with it, base paths must lie under the
            manager's `model_base_path_root`.
    """

    def __init__(self, manager: ModelManager, allow_reload: bool = False):
        self.manager = manager
        self.allow_reload = allow_reload

    def GetModelStatus(self, request, context):  # noqa: N802
        return _answer(context, lambda: api.model_status(self.manager, request))

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        def reload():
            if not self.allow_reload:
                raise ServingError(
                    "PERMISSION_DENIED",
                    "HandleReloadConfigRequest is disabled on this server: start it with "
                    "--enable_reload_config_request and --model_base_path_root=DIR to change models over the "
                    "network, or edit --model_config_file (read again every --model_config_file_poll_wait_seconds)",
                )
            try:
                configs = model_configs_from_proto(request.config)
            except ValueError as error:
                raise ServingError("INVALID_ARGUMENT", str(error)) from None
            self.manager.reload_config(configs)
            return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))

        return _answer(context, reload)


def start_grpc_server(manager: ModelManager, host: str, port: int, limits: Limits, tls: TlsConfig | None = None,
                      max_threads: int = 16, channel_arguments=(), unix_socket: str = "", allow_reload: bool = False):
    """Starts a gRPC server; returns `(server, bound_port)` (`port=0` binds an ephemeral port).

    The UNIX socket (`unix_socket`), if any, gets the same credentials as the TCP port (TLS and client
    verification with `tls`) and is made owner-only (mode 0600).
    """
    options = [
        ("grpc.max_receive_message_length", limits.max_request_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),  # a port already in use is an error, not a silently shared port
        *channel_arguments,
    ]
    server = grpc.server(ThreadPoolExecutor(max_threads, thread_name_prefix="grpc"), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(manager, limits), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, allow_reload), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        credentials = grpc_server_credentials(tls) if tls is not None else None
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        if unix_socket:
            target = f"unix:{unix_socket}"
            server.add_secure_port(target, credentials) if credentials else server.add_insecure_port(target)
    except RuntimeError as error:
        raise OSError(f"gRPC could not listen on {address}: {error}; is the port in use? (--port)") from error
    if not bound:
        raise OSError(f"gRPC could not listen on {address}; is the port in use? (--port)")
    server.start()
    if unix_socket:
        os.chmod(unix_socket, 0o600)
    return server, bound
