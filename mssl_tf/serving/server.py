"""The embedded, TF-Serving-compatible model server: a model manager behind gRPC and (optionally) REST."""

from __future__ import annotations

import gc
import logging
import os
import threading

from mssl_tf.serving.admission import MemoryBudget
from mssl_tf.serving.config import BatchingOptions, ModelConfig, TlsConfig, read_model_server_config
from mssl_tf.serving.errors import ServingError
from mssl_tf.serving.grpc_server import start_grpc_server
from mssl_tf.serving.limits import Limits
from mssl_tf.serving.models import ModelManager
from mssl_tf.serving.rest import RestApi
from mssl_tf.serving.rest_server import RestServer

logger = logging.getLogger("mssl_tf.serving")


class ModelServer:
    """Serves SavedModels over TF Serving's gRPC and REST APIs, from this process.

    Args:
        models: the models to serve.
        host: the address both endpoints bind (loopback by default; "0.0.0.0" for every interface).
        port: the gRPC port (0: an ephemeral one, see `grpc_port`).
        rest_api_port: the REST port, 0 for an ephemeral one, None for no REST endpoint.
        poll_wait_seconds: interval between polls of the base paths for new versions (0: once, negative: never).
        batching: server-side batching options, None to run every request on its own.
        tls: serve both endpoints over TLS.
        limits: request size, JSON depth, tensor element, memory budget and rows-per-run caps.
        saved_model_tags: the MetaGraph to load.
        max_num_load_retries: retries of a version that failed to load.
        enable_model_warmup: replay `assets.extra/tf_serving_warmup_requests` before a version is served.
        rest_api_num_threads: REST requests run at once (connections are not limited by it).
        rest_api_timeout_seconds: per REST request, from its headers: time for its body to arrive and for it to
            reach a worker (TF Serving's `--rest_api_timeout_in_ms`).
        rest_api_header_timeout_seconds: time a REST connection has to send complete request headers, from its
            opening or its previous answer (idle keep-alive connections are closed after it too).
        rest_api_max_connections: REST connections open at once; more are closed on arrival (default: half the
            file descriptor limit, at most 4096).
        grpc_max_threads: gRPC requests served at once.
        grpc_channel_arguments: extra `(key, value)` gRPC server options.
        grpc_socket_path: also serve gRPC on this UNIX socket.
        model_config_file: if given with `model_config_file_poll_wait_seconds > 0`, re-read this file that
            often and apply changes (models added, removed, new policies or labels).
        model_config_file_poll_wait_seconds: see `model_config_file`.
        enable_reload_config_request: answer ModelService/HandleReloadConfigRequest (off: PERMISSION_DENIED);
            needs `model_base_path_root`.
        model_base_path_root: every model base path (from the arguments, the config file or a reload request)
            must lie under this directory.

    Example:
        >>> with ModelServer([ModelConfig("encoder", "export/encoder")], port=0, rest_api_port=0) as server:
        ...     client = EmbeddingClient(f"127.0.0.1:{server.grpc_port}", "encoder")

    Starting the server calls `gc.freeze()` once the first versions are loaded: TensorFlow's many long-lived
    objects then stay out of the garbage collector's full passes, which otherwise add tens of milliseconds to
    requests that allocate many objects (a REST batch of images is tens of thousands of lists).
    """

    def __init__(self, models, *, host: str = "127.0.0.1", port: int = 8500, rest_api_port: int | None = None,
                 poll_wait_seconds: float = 1.0, batching: BatchingOptions | None = None, tls: TlsConfig | None = None,
                 limits: Limits = Limits(), saved_model_tags=("serve",), max_num_load_retries: int = 5,
                 enable_model_warmup: bool = True, rest_api_num_threads: int | None = None,
                 rest_api_timeout_seconds: float = 30.0, rest_api_header_timeout_seconds: float = 10.0,
                 rest_api_max_connections: int | None = None,
                 grpc_max_threads: int = 16, grpc_channel_arguments=(), grpc_socket_path: str = "",
                 model_config_file=None, model_config_file_poll_wait_seconds: float = 0,
                 enable_reload_config_request: bool = False, model_base_path_root: str | None = None):
        if enable_reload_config_request and not model_base_path_root:
            raise ValueError("--enable_reload_config_request needs --model_base_path_root=DIR: the directory that "
                             "every model a reload request names must lie under")
        self.host, self.port, self.rest_api_port = host, port, rest_api_port
        self.tls, self.limits = tls, limits
        self.rest_api_num_threads = rest_api_num_threads or max(8, 4 * (os.cpu_count() or 1))
        self.rest_api_timeout_seconds = rest_api_timeout_seconds
        self.rest_api_header_timeout_seconds = rest_api_header_timeout_seconds
        self.rest_api_max_connections = rest_api_max_connections
        self.enable_reload_config_request = enable_reload_config_request
        self.budget = MemoryBudget(limits.memory_budget_bytes)
        self.grpc_max_threads = grpc_max_threads
        self.grpc_channel_arguments = tuple(grpc_channel_arguments)
        self.grpc_socket_path = grpc_socket_path
        self.model_config_file = model_config_file
        self.model_config_file_poll_wait_seconds = model_config_file_poll_wait_seconds
        self.manager = ModelManager(
            list(models), poll_wait_seconds=poll_wait_seconds, saved_model_tags=saved_model_tags, batching=batching,
            max_num_load_retries=max_num_load_retries, enable_model_warmup=enable_model_warmup, limits=limits,
            budget=self.budget, model_base_path_root=model_base_path_root,
        )
        self.grpc_port = None
        self.rest_port = None
        self._grpc_server = None
        self._rest_server = None
        self._config_thread = None
        self._stopped = threading.Event()

    def start(self) -> "ModelServer":
        """Loads the models' current versions, then opens the endpoints; returns self."""
        self.manager.start()
        gc.freeze()
        self._grpc_server, self.grpc_port = start_grpc_server(
            self.manager, self.host, self.port, self.limits, self.tls, self.grpc_max_threads,
            self.grpc_channel_arguments, self.grpc_socket_path, self.enable_reload_config_request,
        )
        logger.info("Running gRPC ModelServer at %s:%d%s", self.host, self.grpc_port, " (TLS)" if self.tls else "")
        if self.rest_api_port is not None:
            self._rest_server = RestServer(
                (self.host, self.rest_api_port), RestApi(self.manager, self.limits), self.rest_api_num_threads,
                self.rest_api_timeout_seconds, self.rest_api_header_timeout_seconds, self.tls, self.budget,
                self.rest_api_max_connections,
            ).start()
            self.rest_port = self._rest_server.server_port
            logger.info("Exporting HTTP/REST API at %s:%d%s", self.host, self.rest_port, " (TLS)" if self.tls else "")
        if self.model_config_file and self.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._poll_config_file, name="config-poller", daemon=True)
            self._config_thread.start()
        return self

    def _poll_config_file(self) -> None:
        try:
            current = read_model_server_config(self.model_config_file)
        except (OSError, ValueError):
            current = None
        while not self._stopped.wait(self.model_config_file_poll_wait_seconds):
            try:
                configs = read_model_server_config(self.model_config_file)
            except (OSError, ValueError) as error:
                logger.error("keeping the current models: %s", error)
                continue
            if configs != current:
                logger.info("%s changed; reloading the model config", self.model_config_file)
                try:
                    self.manager.reload_config(configs)
                except ServingError as error:
                    logger.error("keeping the current models: %s", error.message)
                current = configs

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stops accepting requests, lets running ones finish (up to `grace_seconds`), unloads the models."""
        self._stopped.set()
        if self._rest_server is not None:
            self._rest_server.stop(grace_seconds)
        if self._grpc_server is not None:
            self._grpc_server.stop(grace_seconds).wait()
        self.manager.stop()

    def wait(self) -> None:
        """Blocks until `stop()` is called (from a signal handler or another thread)."""
        self._stopped.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def single_model(name: str, base_path: str) -> list[ModelConfig]:
    """The model list for `--model_name/--model_base_path`."""
    return [ModelConfig(name, os.path.abspath(base_path))]
