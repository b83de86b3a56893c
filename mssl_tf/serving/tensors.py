"""numpy ↔ `TensorProto`, and checks of a tensor against a signature's `TensorInfo` (dtype, shape, size)."""

from __future__ import annotations

import json

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from mssl_tf.serving.errors import ServingError
from mssl_tf.serving.json_arrays import integer_array_json

NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_STRING: np.dtype(object),
}
TF_DTYPES = {dtype: enum for enum, dtype in NUMPY_DTYPES.items() if enum != types_pb2.DT_STRING}

# The TensorProto field that holds the values of each dtype when `tensor_content` is empty.
VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def dtype_name(enum: int) -> str:
    """`DT_FLOAT` → `"float32"` (numpy's name), for messages; unsupported dtypes keep TF's name."""
    dtype = NUMPY_DTYPES.get(enum)
    if dtype is None:
        return types_pb2.DataType.Name(enum)
    return "string" if enum == types_pb2.DT_STRING else dtype.name


def tf_dtype_of(array: np.ndarray) -> int:
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    try:
        return TF_DTYPES[array.dtype.newbyteorder("=")]
    except KeyError:
        raise ServingError("INVALID_ARGUMENT", f"numpy dtype {array.dtype} has no TensorFlow equivalent") from None


def signature_shape(tensor_info) -> list[int] | None:
    """A TensorInfo's shape with -1 for unknown sizes, or None for unknown rank."""
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [dim.size for dim in tensor_info.tensor_shape.dim]


def format_shape(shape) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]" if shape is not None else "<unknown rank>"


def to_ndarray(proto: tensor_pb2.TensorProto, name: str = "tensor", max_elements: int | None = None) -> np.ndarray:
    """A `TensorProto` as a numpy array (a read-only view on `tensor_content` when it is set).

    Raises:
        ServingError: INVALID_ARGUMENT when the proto's values do not fill its shape, its dtype is unsupported,
            or it has more than `max_elements` elements.
    """
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise ServingError("INVALID_ARGUMENT", f"tensor parsing error: {name} has a negative dimension in {shape}")
    elements = 1
    for size in shape:  # Python integers: numpy's int64 product wraps around for dimensions like [2**62, 2**62]
        elements *= size
    if elements >= 1 << 62 and (max_elements is None or max_elements >= 1 << 62):
        raise ServingError("INVALID_ARGUMENT", f"tensor parsing error: {name} has shape {format_shape(shape)}, "
                                               f"{elements} elements: more than any tensor can hold")
    if max_elements is not None and elements > max_elements:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input {name} has {elements} elements (shape {format_shape(shape)}), more than this server's limit of "
            f"{max_elements} per tensor (--max_tensor_elements); send smaller batches",
        )
    dtype = NUMPY_DTYPES.get(proto.dtype)
    if dtype is None:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"tensor parsing error: {name} has unsupported dtype {types_pb2.DataType.Name(proto.dtype)}",
        )
    if proto.tensor_content:
        if proto.dtype == types_pb2.DT_STRING:
            raise ServingError("INVALID_ARGUMENT",
                               f"tensor parsing error: {name} is a string tensor with tensor_content")
        if len(proto.tensor_content) != elements * dtype.itemsize:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"tensor parsing error: {name} has {len(proto.tensor_content)} bytes of tensor_content, but shape "
                f"{format_shape(shape)} of {dtype.name} needs {elements * dtype.itemsize}",
            )
        return np.frombuffer(proto.tensor_content, dtype.newbyteorder("<")).reshape(shape)
    values = getattr(proto, VALUE_FIELDS[proto.dtype])
    if proto.dtype == types_pb2.DT_HALF:
        array = np.asarray(values, np.uint16).view(np.float16)
    elif proto.dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), object)
        array[:] = list(values)
    else:
        array = np.asarray(values, dtype)
    if len(array) > elements:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"tensor parsing error: {name} has {len(array)} values, more than its shape {format_shape(shape)} holds",
        )
    if len(array) < elements:  # TensorFlow's rule: missing values repeat the last one (zeros when there is none).
        fill = array[-1] if len(array) else (b"" if proto.dtype == types_pb2.DT_STRING else 0)
        array = np.concatenate([array, np.full(elements - len(array), fill, array.dtype)])
    return array.reshape(shape)


def to_tensor_proto(array) -> tensor_pb2.TensorProto:
    """A numpy array (or anything `np.asarray` takes) as a `TensorProto`, numeric values in `tensor_content`."""
    array = np.asarray(array)
    enum = tf_dtype_of(array)
    proto = tensor_pb2.TensorProto(
        dtype=enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    if enum == types_pb2.DT_STRING:
        proto.string_val.extend(
            value if isinstance(value, bytes) else str(value).encode("utf-8") for value in array.reshape(-1)
        )
    else:
        proto.tensor_content = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    return proto


def check_against_signature(name: str, array: np.ndarray, tensor_info, argument_index: int) -> None:
    """Raises INVALID_ARGUMENT when `array` has another dtype or shape than the signature's input `name`."""
    received = tf_dtype_of(array)
    if received != tensor_info.dtype:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"Expects arg[{argument_index}] to be {dtype_name(tensor_info.dtype)} but {dtype_name(received)} is "
            f"provided: input {name} must be {types_pb2.DataType.Name(tensor_info.dtype)}",
        )
    shape = signature_shape(tensor_info)
    if shape is None:
        return
    compatible = len(shape) == array.ndim and all(
        expected_size in (-1, size) for expected_size, size in zip(shape, array.shape)
    )
    if not compatible:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input {name} has shape {format_shape(array.shape)} but the signature expects {format_shape(shape)} "
            "(-1: any size)",
        )


def array_to_json(array: np.ndarray) -> str:
    """A numeric or boolean array as JSON nested arrays: `json.dumps(array.tolist(), separators=(",", ":"))`.

    Builds the text from one flat list of numbers instead of nested Python lists: a [64, 28, 28, 1] batch is
    50,000 lists otherwise, and allocating those wakes the garbage collector, whose full passes over a process
    holding TensorFlow take tens of milliseconds.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf" or array.size == 0:
        return json.dumps(array.tolist(), separators=(",", ":"))
    text = integer_array_json(array)  # integers without Python numbers; None for other arrays
    if text is not None:
        return text
    values = array.reshape(-1).tolist()
    if array.dtype.kind == "b":
        items = ["true" if value else "false" for value in values]
    elif array.dtype.kind == "f" and not np.isfinite(array).all():
        items = [json.dumps(value) for value in values]  # NaN, Infinity as json.dumps writes them
    else:
        items = list(map(repr, values))
    for size in reversed(array.shape[1:]):
        items = ["[" + ",".join(items[start:start + size]) + "]" for start in range(0, len(items), size)]
    return items[0] if array.ndim == 0 else "[" + ",".join(items) + "]"


def dumps_json(value) -> str:
    """`json.dumps` (compact) for documents whose values may be numpy arrays, written by `array_to_json`."""
    if isinstance(value, np.ndarray):
        return array_to_json(value) if value.dtype.kind in "biuf" else json.dumps(value.tolist(), separators=(",", ":"))
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(key)) + ":" + dumps_json(item) for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps_json(item) for item in value) + "]"
    if isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value, separators=(",", ":"))
