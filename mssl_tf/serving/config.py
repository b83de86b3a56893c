"""TF Serving's configuration files, read with its own protos: ModelServerConfig, BatchingParameters, SSLConfig.

`--model_config_file` is parsed into `tensorflow.serving.ModelServerConfig` from tensorflow-serving-api. The pip
package does not ship `BatchingParameters` (session_bundle_config.proto) or `SSLConfig` (ssl_config.proto), so
those two messages are declared here with TF Serving's field names, numbers and types and parsed with the same
`text_format`; a file written for `tensorflow_model_server` therefore reads the same way here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from mssl_tf.serving._dependencies import require_serving_api

require_serving_api()

from tensorflow_serving.config import model_server_config_pb2  # noqa: E402


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions found under a base path are served (TF Serving's `model_version_policy`).

    Args:
        kind: `"latest"` (the `num_versions` highest), `"all"`, or `"specific"` (exactly `versions`).
        num_versions: for `"latest"`.
        versions: for `"specific"`.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset = frozenset()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"version policy {self.kind!r} is not one of latest, all, specific")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(f"latest {{ num_versions: {self.num_versions} }} must keep at least 1 version")
        if self.kind == "specific" and not self.versions:
            raise ValueError("specific { } lists no versions; add `versions: N` lines")

    def select(self, versions_on_disk) -> set[int]:
        """The versions to serve out of those found on disk."""
        versions = set(versions_on_disk)
        if self.kind == "all":
            return versions
        if self.kind == "specific":
            return versions & set(self.versions)
        return set(sorted(versions)[-self.num_versions:])


@dataclass(frozen=True)
class ModelConfig:
    """One served model: a name, a base path holding numeric version directories, a policy and labels."""

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.name:
            raise ValueError("a model config has an empty name; set `name:`")
        if not self.base_path:
            raise ValueError(f"model {self.name!r} has an empty base_path; set `base_path:` to its export directory")


def model_configs_from_proto(proto) -> list[ModelConfig]:
    """`tensorflow.serving.ModelServerConfig` → `ModelConfig`s (only `model_config_list` is supported)."""
    if proto.WhichOneof("config") == "custom_model_config":
        raise ValueError("custom_model_config is not supported; list models in model_config_list { config { ... } }")
    configs = []
    for model in proto.model_config_list.config:
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"model {model.name!r} has model_platform {model.model_platform!r}; only \"tensorflow\" SavedModels "
                "are served"
            )
        choice = model.model_version_policy.WhichOneof("policy_choice")
        if choice == "all":
            policy = VersionPolicy("all")
        elif choice == "specific":
            policy = VersionPolicy("specific", versions=frozenset(model.model_version_policy.specific.versions))
        elif choice == "latest":
            policy = VersionPolicy("latest", num_versions=model.model_version_policy.latest.num_versions or 1)
        else:
            policy = VersionPolicy()
        configs.append(ModelConfig(
            model.name, os.path.abspath(model.base_path), policy, dict(model.version_labels),
        ))
    names = [config.name for config in configs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
    return configs


def parse_model_server_config(text: str) -> list[ModelConfig]:
    """Parses a `--model_config_file` (text-format ModelServerConfig)."""
    proto = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, proto)
    return model_configs_from_proto(proto)


def read_model_server_config(path) -> list[ModelConfig]:
    return read_config_file(path, parse_model_server_config)


# --- BatchingParameters and SSLConfig, declared with TF Serving's field names and numbers. ---

_INT64_WRAPPER = ".google.protobuf.Int64Value"
_STRING_WRAPPER = ".google.protobuf.StringValue"


def _build_messages():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    declared = descriptor_pb2.FileDescriptorProto(
        name="mssl_tf/serving/tensorflow_serving_configs.proto", package="tensorflow.serving", syntax="proto3",
        dependency=[wrappers.name],
    )
    label, types = descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto
    batching = declared.message_type.add(name="BatchingParameters")
    for number, (name, type_name) in enumerate([
        ("max_batch_size", _INT64_WRAPPER), ("batch_timeout_micros", _INT64_WRAPPER),
        ("max_enqueued_batches", _INT64_WRAPPER), ("num_batch_threads", _INT64_WRAPPER),
        ("thread_pool_name", _STRING_WRAPPER),
    ], start=1):
        batching.field.add(name=name, number=number, type=types.TYPE_MESSAGE, type_name=type_name,
                           label=label.LABEL_OPTIONAL)
    batching.field.add(name="allowed_batch_sizes", number=6, type=types.TYPE_INT64, label=label.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=types.TYPE_BOOL, label=label.LABEL_OPTIONAL)
    ssl = declared.message_type.add(name="SSLConfig")
    for number, name in enumerate(["server_key", "server_cert", "custom_ca"], start=1):
        ssl.field.add(name=name, number=number, type=types.TYPE_STRING, label=label.LABEL_OPTIONAL)
    ssl.field.add(name="client_verify", number=4, type=types.TYPE_BOOL, label=label.LABEL_OPTIONAL)
    pool.Add(declared)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")))


BatchingParameters, SSLConfig = _build_messages()


@dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching (TF Serving's BatchingParameters; defaults are its scheduler's defaults).

    Args:
        max_batch_size: most rows in one merged call.
        batch_timeout_micros: how long the oldest queued request may wait for others before its batch runs.
        max_enqueued_batches: queued rows beyond `max_enqueued_batches * max_batch_size` are refused (UNAVAILABLE).
        num_batch_threads: batches run concurrently.
        allowed_batch_sizes: if set, a merged batch is padded up to the next allowed size (the last must equal
            `max_batch_size`).
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple = ()

    def __post_init__(self):
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ValueError("max_batch_size, num_batch_threads and max_enqueued_batches must be at least 1")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must not be negative")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError(
                f"allowed_batch_sizes {sizes} must increase and end with max_batch_size ({self.max_batch_size})"
            )


def parse_batching_parameters(text: str) -> BatchingOptions:
    """Parses a `--batching_parameters_file`; fields this server does not use are ignored."""
    proto = BatchingParameters()
    text_format.Parse(text, proto, allow_unknown_field=True)
    defaults = BatchingOptions()
    return BatchingOptions(
        max_batch_size=proto.max_batch_size.value if proto.HasField("max_batch_size") else defaults.max_batch_size,
        batch_timeout_micros=(proto.batch_timeout_micros.value if proto.HasField("batch_timeout_micros")
                              else defaults.batch_timeout_micros),
        max_enqueued_batches=(proto.max_enqueued_batches.value if proto.HasField("max_enqueued_batches")
                              else defaults.max_enqueued_batches),
        num_batch_threads=(proto.num_batch_threads.value if proto.HasField("num_batch_threads")
                           else defaults.num_batch_threads),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
    )


@dataclass(frozen=True)
class TlsConfig:
    """TLS for both endpoints, from TF Serving's SSLConfig: PEM *contents* (not paths), as in its ssl_config_file.

    Args:
        server_key: the server's private key, PEM.
        server_cert: the server's certificate chain, PEM.
        custom_ca: CA certificates that client certificates must chain to, PEM (with `client_verify`).
        client_verify: require and verify client certificates (mutual TLS).
    """

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False

    def __post_init__(self):
        if not self.server_key or not self.server_cert:
            raise ValueError("the SSL config needs both server_key and server_cert (PEM contents)")
        if self.client_verify and not self.custom_ca:
            raise ValueError("client_verify: true needs custom_ca (the PEM of the CA that signs client certificates)")


def parse_ssl_config(text: str) -> TlsConfig:
    """Parses an `--ssl_config_file`: text-format SSLConfig whose strings hold PEM with escaped newlines (\\n)."""
    proto = SSLConfig()
    text_format.Parse(text, proto)
    return TlsConfig(proto.server_key, proto.server_cert, proto.custom_ca, proto.client_verify)


def ssl_config_text(tls: TlsConfig) -> str:
    """The text of an `--ssl_config_file` for `tls` (PEM newlines escaped as text format requires)."""
    return text_format.MessageToString(SSLConfig(
        server_key=tls.server_key, server_cert=tls.server_cert, custom_ca=tls.custom_ca,
        client_verify=tls.client_verify,
    ))


def read_config_file(path, parse):
    """`parse(text of path)`, with a ValueError naming the file when it cannot be read or parsed."""
    try:
        return parse(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from error
    except text_format.ParseError as error:
        kind = parse.__name__.removeprefix("parse_")
        raise ValueError(f"{path}: not valid text format for {kind}: {error}") from error
