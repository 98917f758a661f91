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
        flat = np.frombuffer(tensor.tensor_content, dtype=dtype)
    else:
        flat = np.asarray(getattr(tensor, _VALUES.get(tensor.dtype, "float_val")), dtype=dtype)
    expected = int(np.prod(shape)) if shape else 1
    if flat.size != expected:
        raise RequestError(f"input {name!r} holds {flat.size} values but its shape {list(shape)} needs {expected}")
    return flat.reshape(shape)


def from_array(array: np.ndarray) -> tensor_pb2.TensorProto:
    array = np.ascontiguousarray(array, dtype=np.float32)
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=array.tobytes())
