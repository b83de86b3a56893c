"""`mssl-tf serve`: the embedded server, driven by `tensorflow_model_server`'s own flags.

A command line moves between the two unchanged:

    tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=encoder --model_base_path=$PWD/export/encoder
    mssl-tf serve           --port=8500 --rest_api_port=8501 --model_name=encoder --model_base_path=$PWD/export/encoder

As in TF Serving, `--rest_api_port=0` (the default) means no REST endpoint; `--port=0` picks a free gRPC port.
Beyond TF Serving: `--host` (default 127.0.0.1, loopback only), `--max_request_bytes`, `--max_json_depth`,
`--max_tensor_elements`, a memory budget (`--request_memory_budget_bytes`, `--memory_per_input_element`,
`--max_rows_per_run`), `--rest_api_header_timeout_in_ms`, and HandleReloadConfigRequest off unless
`--enable_reload_config_request` with `--model_base_path_root`. A few TF Serving flags that have no meaning here
are accepted and ignored, with a note.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

# TF Serving flags accepted so that command lines carry over, but without effect in this server.
IGNORED_FLAGS = (
    "monitoring_config_file", "platform_config_file", "per_process_gpu_memory_fraction", "num_load_threads",
    "num_unload_threads", "load_retry_interval_micros", "flush_filesystem_caches", "tensorflow_session_parallelism",
    "remove_unused_fields_from_bundle_metagraph", "enable_signature_method_name_check", "xla_cpu_compilation_enabled",
    "enable_per_model_batching_params", "thread_pool_factory_config_file", "mixed_precision", "skip_initialize_tpu",
)


def parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "t"):
        return True
    if lowered in ("0", "false", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def add_bool(parser, name: str, default: bool, help: str) -> None:  # noqa: A002
    """`--flag`, `--flag=true|false` (TF Serving's absl flags syntax)."""
    parser.add_argument(f"--{name}", type=parse_bool, nargs="?", const=True, default=default, help=help)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `serve` on the `mssl-tf` command line."""
    parser = subparsers.add_parser(
        "serve", help="serve exported models over TF Serving's gRPC and REST APIs (tensorflow_model_server's flags)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_argument_group("models (TF Serving flags)")
    models.add_argument("--model_name", default="default", help="name of the model served with --model_base_path")
    models.add_argument("--model_base_path", default="", help="directory holding the model's numeric version dirs")
    models.add_argument("--model_config_file", default="", help="text-format ModelServerConfig (several models, "
                        "version policies, version labels); replaces --model_name/--model_base_path")
    models.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                        help="re-read --model_config_file this often (0: never)")
    models.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                        help="poll the base paths for new versions this often (0: once at start; negative: never)")
    models.add_argument("--saved_model_tags", default="serve", help="comma-separated MetaGraph tags to load")
    models.add_argument("--max_num_load_retries", type=int, default=5)
    add_bool(models, "enable_model_warmup", True, "replay assets.extra/tf_serving_warmup_requests before serving")
    add_bool(models, "allow_version_labels_for_unavailable_models", False,
             "accepted for compatibility: this server always allows labels on versions not yet loaded (a request "
             "to such a label answers NOT_FOUND until the version is available)")

    network = parser.add_argument_group("endpoints (TF Serving flags)")
    network.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
    network.add_argument("--grpc_socket_path", default="", help="also serve gRPC on this UNIX socket")
    network.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST endpoint)")
    network.add_argument("--rest_api_num_threads", type=int, default=None,
                         help="REST requests run at once (connections wait in the event loop, not in a thread)")
    network.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                         help="per REST request, from its headers: time for its body to arrive and for it to start "
                              "running (504 DEADLINE_EXCEEDED after)")
    network.add_argument("--grpc_max_threads", type=int, default=16)
    network.add_argument("--grpc_channel_arguments", default="",
                         help="comma-separated key=value gRPC server options (integer values as numbers)")
    network.add_argument("--ssl_config_file", default="",
                         help="text-format SSLConfig (server_key, server_cert, custom_ca: PEM contents; "
                              "client_verify) for TLS on gRPC and REST")

    batching = parser.add_argument_group("batching (TF Serving flags)")
    add_bool(batching, "enable_batching", False, "merge concurrent requests to single-input signatures")
    batching.add_argument("--batching_parameters_file", default="", help="text-format BatchingParameters")

    runtime = parser.add_argument_group("TensorFlow (TF Serving flags)")
    runtime.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    runtime.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)

    extra = parser.add_argument_group("beyond TF Serving")
    extra.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0 for all)")
    extra.add_argument("--max_request_bytes", type=int, default=64 << 20, help="largest gRPC message / REST body")
    extra.add_argument("--max_json_depth", type=int, default=32, help="deepest JSON nesting in a REST body")
    extra.add_argument("--max_tensor_elements", type=int, default=1 << 24, help="most elements in one input tensor")
    extra.add_argument("--request_memory_budget_bytes", type=int, default=4 << 30,
                       help="memory the requests in progress may use together, by estimated cost (beyond: "
                            "RESOURCE_EXHAUSTED / 429)")
    extra.add_argument("--memory_per_input_element", type=int, default=512,
                       help="working bytes a model run is assumed to take per input element (for the budget)")
    extra.add_argument("--max_rows_per_run", type=int, default=256,
                       help="batches of row-wise signatures run in pieces of at most this many rows")
    extra.add_argument("--rest_api_header_timeout_in_ms", type=int, default=10000,
                       help="time a REST connection has to send complete request headers (idle ones are closed)")
    extra.add_argument("--rest_api_max_connections", type=int, default=None,
                       help="REST connections open at once; more are closed on arrival (default: half the file "
                            "descriptor limit, at most 4096)")
    add_bool(extra, "enable_reload_config_request", False,
             "answer ModelService/HandleReloadConfigRequest (off: PERMISSION_DENIED); needs --model_base_path_root")
    extra.add_argument("--model_base_path_root", default="",
                       help="every model base path (flags, config file, reload requests) must lie under this directory")
    extra.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    for name in IGNORED_FLAGS:
        parser.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(handler=serve_command)
    return parser


def channel_arguments(text: str) -> list[tuple[str, object]]:
    arguments = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"--grpc_channel_arguments item {item!r} is not key=value")
        arguments.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return arguments


def build_server(args):
    """A `ModelServer` from parsed `serve` flags (validated as TF Serving validates them)."""
    from mssl_tf.serving.config import (
        BatchingOptions, parse_batching_parameters, parse_ssl_config, read_config_file, read_model_server_config,
    )
    from mssl_tf.serving.limits import Limits
    from mssl_tf.serving.server import ModelServer, single_model

    if bool(args.model_config_file) == bool(args.model_base_path):
        raise ValueError("give exactly one of --model_base_path (with --model_name) or --model_config_file")
    models = (read_model_server_config(args.model_config_file) if args.model_config_file
              else single_model(args.model_name, args.model_base_path))
    batching = None
    if args.enable_batching:
        batching = (read_config_file(args.batching_parameters_file, parse_batching_parameters)
                    if args.batching_parameters_file else BatchingOptions())
    elif args.batching_parameters_file:
        logging.getLogger("mssl_tf.serving").warning("--batching_parameters_file is ignored without --enable_batching")
    tls = read_config_file(args.ssl_config_file, parse_ssl_config) if args.ssl_config_file else None
    return ModelServer(
        models, host=args.host, port=args.port, rest_api_port=args.rest_api_port or None,
        poll_wait_seconds=args.file_system_poll_wait_seconds, batching=batching, tls=tls,
        limits=Limits(args.max_request_bytes, args.max_json_depth, args.max_tensor_elements,
                      args.request_memory_budget_bytes, args.memory_per_input_element, args.max_rows_per_run),
        saved_model_tags=tuple(tag.strip() for tag in args.saved_model_tags.split(",") if tag.strip()),
        max_num_load_retries=args.max_num_load_retries, enable_model_warmup=args.enable_model_warmup,
        rest_api_num_threads=args.rest_api_num_threads, rest_api_timeout_seconds=args.rest_api_timeout_in_ms / 1000,
        rest_api_header_timeout_seconds=args.rest_api_header_timeout_in_ms / 1000,
        rest_api_max_connections=args.rest_api_max_connections,
        enable_reload_config_request=args.enable_reload_config_request,
        model_base_path_root=args.model_base_path_root or None,
        grpc_max_threads=args.grpc_max_threads, grpc_channel_arguments=channel_arguments(args.grpc_channel_arguments),
        grpc_socket_path=args.grpc_socket_path, model_config_file=args.model_config_file or None,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
    )


def serve_command(args) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in IGNORED_FLAGS:
        if getattr(args, name) is not None:
            print(f"mssl-tf serve: --{name} has no effect in this server (TF Serving only); ignored", file=sys.stderr)
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        if args.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        if args.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    from mssl_tf.serving.errors import ServingError

    try:
        server = build_server(args)
    except (ValueError, OSError, ImportError, ServingError) as error:
        print(f"mssl-tf serve: {getattr(error, 'message', error)}", file=sys.stderr)
        return 2
    try:
        server.start()
    except OSError as error:
        server.manager.stop()
        print(f"mssl-tf serve: {error}", file=sys.stderr)
        return 2
    scheme = "TLS " if server.tls else ""
    print(f"Running gRPC ModelServer at {args.host}:{server.grpc_port} {scheme}...", flush=True)
    if server.rest_port is not None:
        print(f"Exporting HTTP/REST API at {args.host}:{server.rest_port} {scheme}...", flush=True)

    def stop(signum, frame):
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait()
    return 0
