"""Status codes shared by the gRPC and REST front ends, with TF Serving's HTTP mapping."""

from __future__ import annotations

# Canonical codes in their numeric order (google.rpc.Code, grpc.StatusCode and tensorflow.error.Code agree).
CODE_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request failed with a canonical status code (`"NOT_FOUND"`, `"INVALID_ARGUMENT"`, ...).

    Raised by the server's core (and turned into a gRPC status or a REST `{"error": ...}` body) and by the clients
    (from either protocol), so callers handle one exception type whichever transport they use.

    Attributes:
        code: the status code's name, as in `grpc.StatusCode` (e.g. `"FAILED_PRECONDITION"`).
        message: the error message, as the server sent it.
        http_status: the HTTP status TF Serving's REST API answers for `code`.
    """

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code!r}; expected one of {', '.join(CODE_NAMES)}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def code_from_number(number: int) -> str:
    """`5` → `"NOT_FOUND"`; unknown numbers are `"UNKNOWN"`."""
    return CODE_NAMES[number] if 0 <= number < len(CODE_NAMES) else "UNKNOWN"


def from_tensorflow(error) -> ServingError:
    """A `tf.errors.OpError` raised while running a signature, with its code kept."""
    message = getattr(error, "message", None) or str(error)
    return ServingError(code_from_number(getattr(error, "error_code", 2)), message.strip())


def load_error(error: Exception, path) -> ServingError:
    """Why a version failed to load, with the code TF Serving reports for it.

    A TensorFlow error keeps its code; a `saved_model.pb` that does not parse is DATA_LOSS (TensorFlow's
    ReadBinaryProto says "Can't parse ... as binary proto"); a missing file or MetaGraph is NOT_FOUND.
    """
    if isinstance(error, ServingError):
        return error
    from google.protobuf.message import DecodeError

    if isinstance(error, DecodeError):
        return ServingError("DATA_LOSS", f"Can't parse {path}/saved_model.pb as binary proto: {error}; the version "
                                         "is corrupt or still being copied: export it again")
    if isinstance(error, (FileNotFoundError, LookupError)) or "no MetaGraph tagged" in str(error):
        return ServingError("NOT_FOUND", f"{type(error).__name__}: {error}")
    if hasattr(error, "error_code"):
        return from_tensorflow(error)
    return ServingError("UNKNOWN", f"{type(error).__name__}: {error}")
