"""Loaded model versions and the manager that finds, loads, swaps and unloads them as TF Serving does.

- A model is a base path whose numeric subdirectories are versions (`export/encoder/1/`, `.../2/`); other names
  (including the temporary directories of an atomic export) are ignored, and so is a version directory with no
  `saved_model.pb` yet (a copy in progress).
- The version policy picks the versions to serve: the latest N (default 1), all, or specific ones.
- The base path is polled every `file_system_poll_wait_seconds`. New versions are loaded (and warmed up from
  `assets.extra/tf_serving_warmup_requests`) before old ones are unloaded, and an old version is unloaded only
  once a version the policy wants is available, so the model never goes unavailable during a swap.
- Unloading removes a version from the map that requests are resolved against; a request that already resolved
  it keeps its reference and finishes on it, so no in-flight request is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mssl_tf.serving.admission import MemoryBudget, decoded_image_elements, run_cost
from mssl_tf.serving.batching import BatchScheduler
from mssl_tf.serving.config import BatchingOptions, ModelConfig
from mssl_tf.serving.deadlines import check_deadline
from mssl_tf.serving.errors import ServingError, from_tensorflow, load_error
from mssl_tf.serving.limits import Limits
from mssl_tf.serving.tensors import check_against_signature, signature_shape, to_ndarray

logger = logging.getLogger("mssl_tf.serving")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress", "")
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def read_meta_graph(path, tags=("serve",)):
    """The MetaGraphDef with exactly `tags` from a SavedModel directory (`saved_model.pb` or `.pbtxt`)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(path)
    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    elif (path / "saved_model.pbtxt").is_file():
        text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model)
    else:
        raise FileNotFoundError(f"{path} holds no saved_model.pb or saved_model.pbtxt")
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    found = [sorted(meta_graph.meta_info_def.tags) for meta_graph in saved_model.meta_graphs]
    raise ValueError(f"{path} has no MetaGraph tagged {sorted(tags)} (found {found}); pass --saved_model_tags")


def register_text_ops() -> None:
    """Registers TensorFlow Text's ops when it is installed (the `text` extra): a text model's SavedModel tokenizes
    with them, and TF Serving's own binary links them in the same way."""
    try:
        import tensorflow_text  # noqa: F401
    except ImportError:
        pass


class Servable:
    """One loaded version of a model: its SignatureDefs (for metadata and validation) and callable signatures.

    Args:
        name: the model's name.
        version: the version number.
        path: the version's SavedModel directory.
        tags: the MetaGraph to load.
        batching: if given, single-input signatures whose inputs and outputs all lead with the batch axis are
            batched across concurrent requests.
        limits: the request limits (tensor elements, rows per run, memory per input element).
        budget: the server-wide memory budget each run is admitted against (None: no admission).
    """

    def __init__(self, name: str, version: int, path, tags=("serve",), batching: BatchingOptions | None = None,
                 limits: Limits = Limits(), budget: MemoryBudget | None = None):
        import tensorflow as tf

        self.name, self.version, self.path, self.limits, self.budget = name, version, Path(path), limits, budget
        self.signature_defs = dict(read_meta_graph(path, tags).signature_def)
        register_text_ops()
        self.loaded = tf.saved_model.load(str(path), tags=list(tags))
        self.functions = dict(self.loaded.signatures)
        self.decoded_image_elements = decoded_image_elements(path)
        # Signatures whose rows are independent examples: batched across requests, split into runs.
        self.row_wise = {signature_name for signature_name in self.functions
                         if self._batchable(self.signature_defs.get(signature_name))}
        self.schedulers = {}
        if batching is not None:
            for signature_name, function in self.functions.items():
                if signature_name in self.row_wise:
                    (input_name,) = self.signature_defs[signature_name].inputs
                    self.schedulers[signature_name] = BatchScheduler(
                        lambda inputs, signature_name=signature_name: self._call(signature_name, inputs),
                        input_name, batching, name=f"{name}-{version}-{signature_name}",
                    )

    @staticmethod
    def _batchable(signature_def) -> bool:
        if signature_def is None or len(signature_def.inputs) != 1:
            return False
        shapes = [signature_shape(info) for info in [*signature_def.inputs.values(), *signature_def.outputs.values()]]
        return all(shape and shape[0] == -1 for shape in shapes)

    def signature(self, signature_name: str):
        """The SignatureDef that a request names ("" means serving_default); FAILED_PRECONDITION if absent."""
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature_def = self.signature_defs.get(signature_name)
        if signature_def is None or signature_name not in self.functions:
            available = ", ".join(sorted(self.functions))
            raise ServingError(
                "FAILED_PRECONDITION",
                f"Serving signature key \"{signature_name}\" not found. Model {self.name} version {self.version} has "
                f"the signatures: {available}",
            )
        if signature_def.method_name not in PREDICT_METHODS:
            raise ServingError(
                "FAILED_PRECONDITION",
                f"Expected prediction signature method_name to be one of {{{', '.join(PREDICT_METHODS[:3])}}}. "
                f"Was: {signature_def.method_name}",
            )
        return signature_name, signature_def

    def predict(self, signature_name: str, inputs: dict, output_filter=(), deadline: float | None = None) -> dict:
        """Validates `inputs` (name → numpy array) against the signature, admits its memory cost and runs it.

        Args:
            signature_name: the signature ("" for serving_default).
            inputs: name → numpy array.
            output_filter: output names to return (all when empty).
            deadline: `time.monotonic()` value after which the work is not started (nor its next piece).

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature; INVALID_ARGUMENT for missing or extra
                inputs, a wrong dtype or shape, too many elements, or an unknown output in `output_filter`;
                RESOURCE_EXHAUSTED when its memory does not fit the budget; DEADLINE_EXCEEDED when `deadline`
                passed before it ran; the TensorFlow error's code if the model itself fails.
        """
        signature_name, signature_def = self.signature(signature_name)
        expected = signature_def.inputs
        if len(inputs) != len(expected):
            sent, wanted = sorted(inputs), sorted(expected)
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sent)}}}) != "
                f"len({{{','.join(wanted)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}.",
            )
        for name in sorted(inputs):
            if name not in expected:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input tensor alias not found in signature: {name}. Inputs expected to be in the set "
                    f"{{{','.join(sorted(expected))}}}.",
                )
        for index, name in enumerate(sorted(expected)):
            array = inputs[name]
            if array.size > self.limits.max_tensor_elements:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"input {name} has {array.size} elements, more than this server's limit of "
                    f"{self.limits.max_tensor_elements} per tensor (--max_tensor_elements); send smaller batches",
                )
            check_against_signature(name, array, expected[name], index)
        for output_name in output_filter:
            if output_name not in signature_def.outputs:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"output tensor alias not found in signature: {output_name} Outputs expected to be in the set "
                    f"{{{','.join(sorted(signature_def.outputs))}}}.",
                )
        rows_per_run = self.limits.max_rows_per_run if signature_name in self.row_wise else None
        reservation = None
        if self.budget is not None:
            reservation = self.budget.reserve(
                run_cost(inputs, rows_per_run, self.limits.memory_per_input_element, self.decoded_image_elements),
                f"this request to {self.name} version {self.version} signature {signature_name}",
            )
        try:
            check_deadline(deadline, "before the model ran")
            scheduler = self.schedulers.get(signature_name)
            outputs = (scheduler.submit(inputs, deadline) if scheduler is not None
                       else self._call(signature_name, inputs, deadline))
        finally:
            if reservation is not None:
                reservation.release()
        if output_filter:
            outputs = {name: outputs[name] for name in output_filter}
        return outputs

    def _call(self, signature_name: str, inputs: dict, deadline: float | None = None) -> dict:
        """Runs the signature; a row-wise one in pieces of `max_rows_per_run` rows, checking `deadline` before each."""
        if signature_name in self.row_wise:
            ((input_name, array),) = inputs.items()
            size = self.limits.max_rows_per_run
            if array.ndim and len(array) > size:
                pieces = []
                for start in range(0, len(array), size):
                    check_deadline(deadline, f"after {start} of {len(array)} rows")
                    pieces.append(self._run(signature_name, {input_name: array[start:start + size]}))
                return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
        return self._run(signature_name, inputs)

    def _run(self, signature_name: str, inputs: dict) -> dict:
        import tensorflow as tf

        function = self.functions[signature_name]
        try:
            outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
        except tf.errors.OpError as error:
            raise from_tensorflow(error) from None
        return {name: value.numpy() for name, value in outputs.items()}

    def warm_up(self) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` (PredictionLog records); returns the count replayed."""
        warmup_file = self.path / WARMUP_FILE
        if not warmup_file.is_file():
            return 0
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        replayed = 0
        for record in tf.data.TFRecordDataset(str(warmup_file)).take(MAX_WARMUP_RECORDS):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                logger.warning("%s: skipping a %s warm-up record (only predict logs are replayed)",
                               warmup_file, log.WhichOneof("log_type"))
                continue
            request = log.predict_log.request
            inputs = {name: to_ndarray(proto, name) for name, proto in request.inputs.items()}
            self.predict(request.model_spec.signature_name, inputs, tuple(request.output_filter))
            replayed += 1
        return replayed

    def close(self) -> None:
        """Stops batching (queued requests still run); the model is freed once no request holds it."""
        for scheduler in self.schedulers.values():
            scheduler.close()


@dataclass
class VersionStatus:
    """A version's state as GetModelStatus reports it."""

    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


def versions_on_disk(base_path) -> dict[int, Path]:
    """Numeric subdirectories of `base_path` that hold a SavedModel, by version."""
    versions = {}
    try:
        entries = list(os.scandir(base_path))
    except (FileNotFoundError, NotADirectoryError):
        return versions
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir():
            path = Path(entry.path)
            if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
                versions[int(entry.name)] = path
    return versions


class ModelManager:
    """Serves the versions of each configured model and keeps them in line with the base paths.

    Args:
        configs: the models (from `--model_name/--model_base_path` or `--model_config_file`).
        poll_wait_seconds: interval between polls of the base paths; 0 polls once at start, negative never.
        saved_model_tags: the MetaGraph to load.
        batching: server-side batching options, or None for none.
        max_num_load_retries: failed loads of one version retried on later polls at most this often.
        enable_model_warmup: replay warm-up records before a version becomes available.
        limits: request limits handed to every version.
        budget: the server-wide memory budget every version's runs are admitted against (None: no admission).
        model_base_path_root: if given, every base path must lie under this directory (after resolving links).
    """

    def __init__(self, configs, poll_wait_seconds: float = 1.0, saved_model_tags=("serve",),
                 batching: BatchingOptions | None = None, max_num_load_retries: int = 5,
                 enable_model_warmup: bool = True, limits: Limits = Limits(), budget: MemoryBudget | None = None,
                 model_base_path_root: str | None = None):
        self.poll_wait_seconds = poll_wait_seconds
        self.saved_model_tags = tuple(saved_model_tags)
        self.batching = batching
        self.max_num_load_retries = max_num_load_retries
        self.enable_model_warmup = enable_model_warmup
        self.limits = limits
        self.budget = budget
        self.model_base_path_root = model_base_path_root
        configs = list(configs)
        self.check_base_paths(configs)
        self._configs: dict[str, ModelConfig] = {config.name: config for config in configs}
        self._servables: dict[str, dict[int, Servable]] = {}  # replaced, never mutated: readers need no lock
        self._states: dict[str, dict[int, VersionStatus]] = {}
        self._failures: dict[tuple[str, int], int] = {}
        self._missing_logged: set[str] = set()
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    # --- lifecycle ---

    def start(self) -> None:
        """Loads what the policies want now, then polls in the background."""
        if self.poll_wait_seconds >= 0:
            self.poll()
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._poll_lock:
            for name in list(self._servables):
                for version in list(self._servables.get(name, {})):
                    self._unload(name, version)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll()
            except Exception:  # a broken poll must not stop later ones
                logger.exception("polling the model base paths failed")

    def poll(self) -> None:
        """One pass over every model: load the versions the policy wants, then unload the others."""
        with self._poll_lock:
            for config in list(self._configs.values()):
                if self._stop.is_set():
                    return
                self._poll_model(config)

    def check_base_paths(self, configs) -> None:
        """Raises PERMISSION_DENIED when a base path lies outside `model_base_path_root`."""
        if self.model_base_path_root is None:
            return
        root = os.path.realpath(self.model_base_path_root)
        for config in configs:
            path = os.path.realpath(config.base_path)
            if os.path.commonpath([root, path]) != root:
                raise ServingError(
                    "PERMISSION_DENIED",
                    f"model {config.name}: base path {config.base_path} is outside the allowed root {root} "
                    "(--model_base_path_root); export the model under it",
                )

    def reload_config(self, configs) -> None:
        """Replaces the model list (HandleReloadConfigRequest, a changed --model_config_file).

        Raises:
            ServingError: PERMISSION_DENIED when a base path lies outside `model_base_path_root` (nothing changes).
        """
        configs = list(configs)
        self.check_base_paths(configs)
        configs = {config.name: config for config in configs}
        with self._poll_lock:
            removed = {name for name, config in self._configs.items()
                       if name not in configs or configs[name].base_path != config.base_path}
            self._configs = configs
            for name in removed:
                for version in list(self._servables.get(name, {})):
                    self._unload(name, version)
        self.poll()

    # --- loading and unloading ---

    def _set_state(self, name: str, version: int, state: str, error_code: str = "OK", error_message: str = ""):
        with self._lock:
            self._states.setdefault(name, {})[version] = VersionStatus(state, error_code, error_message)

    def _poll_model(self, config: ModelConfig) -> None:
        on_disk = versions_on_disk(config.base_path)
        if not on_disk and config.name not in self._missing_logged:
            logger.warning("No versions of servable %s found under base path %s", config.name, config.base_path)
            self._missing_logged.add(config.name)
        aspired = config.version_policy.select(on_disk)
        for version in sorted(aspired - set(self._servables.get(config.name, {})), reverse=True):
            if self._failures.get((config.name, version), 0) <= self.max_num_load_retries:
                self._load(config.name, version, on_disk[version])
        loaded = set(self._servables.get(config.name, {}))
        if loaded & aspired:  # availability first: keep old versions until a wanted one is up
            for version in sorted(loaded - aspired):
                self._unload(config.name, version)

    def _load(self, name: str, version: int, path: Path) -> None:
        self._set_state(name, version, "LOADING")
        logger.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        try:
            servable = Servable(name, version, path, self.saved_model_tags, self.batching, self.limits, self.budget)
            if self.enable_model_warmup:
                replayed = servable.warm_up()
                if replayed:
                    logger.info("Warmed up %s version %d with %d requests", name, version, replayed)
        except Exception as error:
            self._failures[(name, version)] = self._failures.get((name, version), 0) + 1
            failure = load_error(error, path)
            code, message = failure.code, failure.message
            logger.error("Loading servable: {name: %s version: %d} failed: %s", name, version, message)
            self._set_state(name, version, "END", code, message)
            return
        with self._lock:
            versions = dict(self._servables.get(name, {}))
            versions[version] = servable
            self._servables = {**self._servables, name: versions}
            self._states.setdefault(name, {})[version] = VersionStatus("AVAILABLE")
        logger.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _unload(self, name: str, version: int) -> None:
        with self._lock:
            versions = dict(self._servables.get(name, {}))
            servable = versions.pop(version, None)
            self._servables = {**self._servables, name: versions}
            if servable is not None:
                self._states.setdefault(name, {})[version] = VersionStatus("UNLOADING")
        if servable is None:
            return
        servable.close()
        self._set_state(name, version, "END")
        logger.info("Unloaded servable version {name: %s version: %d}", name, version)

    # --- queries ---

    def model_names(self) -> list[str]:
        return sorted(self._configs)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request's model spec names (latest available version when neither is given).

        Raises:
            ServingError: NOT_FOUND for an unknown model or a version not available; INVALID_ARGUMENT for an
                unknown label or both a version and a label.
        """
        if version is not None and label:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Both model version ({version}) and model version label ({label}) cannot be supplied.",
            )
        if label:
            config = self._configs.get(name)
            if config is None or label not in config.version_labels:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = config.version_labels[label]
        versions = self._servables.get(name, {})
        if version is None:
            if not versions:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        servable = versions.get(version)
        if servable is None:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> list[tuple[int, VersionStatus]]:
        """(version, status) pairs for GetModelStatus, newest first; NOT_FOUND as TF Serving words it."""
        if label:
            config = self._configs.get(name)
            if config is None or label not in config.version_labels:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = config.version_labels[label]
        with self._lock:
            states = dict(self._states.get(name, {}))
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            return [(version, states[version])]
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        return sorted(states.items(), reverse=True)
