"""TensorProto <-> numpy for the float types the model speaks, without importing TensorFlow's ops."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from fpgaflow.errors import RequestError

_DTYPES = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_HALF: np.float16}
_VALUES = {types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val"}


def to_array(tensor: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    if tensor.dtype not in _DTYPES:
        allowed = ", ".join(types_pb2.DataType.Name(d) for d in _DTYPES)
        raise RequestError(f"input {name!r} has dtype {types_pb2.DataType.Name(tensor.dtype)}; expected one of {allowed}")
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    dtype = _DTYPES[tensor.dtype]
    if tensor.tensor_content:
        if len(tensor.tensor_content) % np.dtype(dtype).itemsize:
            raise RequestError(f"input {name!r}: tensor_content of {len(tensor.tensor_content)} bytes is not a whole "
                               f"number of {types_pb2.DataType.Name(tensor.dtype)} values")
        flat = np.frombuffer(tensor.tensor_content, dtype=dtype)
    elif tensor.dtype == types_pb2.DT_HALF:  # half_val holds each value's 16 bits in an int32
        flat = np.asarray(tensor.half_val, dtype=np.uint16).view(np.float16)
    else:
        flat = np.asarray(getattr(tensor, _VALUES[tensor.dtype]), dtype=dtype)
    expected = int(np.prod(shape)) if shape else 1
    if flat.size != expected:
        raise RequestError(f"input {name!r} holds {flat.size} values but its shape {list(shape)} needs {expected}")
    return flat.reshape(shape)


def from_array(array: np.ndarray) -> tensor_pb2.TensorProto:
    array = np.ascontiguousarray(array, dtype=np.float32)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=array.tobytes())


# ------------------------------------------------------------------ Open Inference Protocol (v2)
V2_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_V2_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def v2_to_array(tensor, raw: bytes | None) -> np.ndarray:
    """A v2 input tensor (its raw bytes when the request carries raw_input_contents) as a numpy array."""
    name = tensor.name
    if tensor.datatype not in V2_DTYPES:
        raise RequestError(f"input {name!r} has datatype {tensor.datatype or '(none)'}; expected one of {', '.join(V2_DTYPES)}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise RequestError(f"input {name!r} has a negative dimension in its shape {list(shape)}")
    dtype = np.dtype(V2_DTYPES[tensor.datatype]).newbyteorder("<")
    expected = int(np.prod(shape)) if shape else 1
    if raw is not None:
        if len(raw) != expected * dtype.itemsize:
            raise RequestError(f"input {name!r}: {len(raw)} raw bytes, but shape {list(shape)} of {tensor.datatype} "
                               f"needs {expected * dtype.itemsize}")
        flat = np.frombuffer(raw, dtype=dtype)
    else:
        if tensor.datatype not in _V2_CONTENTS:
            raise RequestError(f"input {name!r}: {tensor.datatype} data must come as raw_input_contents")
        flat = np.asarray(getattr(tensor.contents, _V2_CONTENTS[tensor.datatype]), dtype=dtype)
        if flat.size != expected:
            raise RequestError(f"input {name!r} holds {flat.size} values but its shape {list(shape)} needs {expected}")
    return flat.reshape(shape)


def array_to_v2_raw(array: np.ndarray) -> tuple[str, list[int], bytes]:
    """Datatype, shape and little-endian bytes of an FP32 output."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return "FP32", list(array.shape), array.tobytes()
