"""TensorProto and Open Inference v2 tensors to numpy and back: every encoding a client may send is read
as the same numbers, and every malformed tensor is refused with a message that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from fpgaflow.errors import RequestError
from fpgaflow_inference.tensors import array_to_v2_raw, from_array, to_array, v2_to_array
from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as pb

ROWS = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


def tensor_proto(dtype: int, shape: list[int], **values) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def v2_tensor(datatype: str, shape: list[int], **contents) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name="features", datatype=datatype, shape=shape,
                                                 contents=pb.InferTensorContents(**contents))


def test_from_array_and_back_is_the_same_float32_array():
    tensor = from_array(ROWS)
    assert tensor.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in tensor.tensor_shape.dim] == [3, 4]
    back = to_array(tensor, "features")
    assert back.dtype == np.float32 and np.array_equal(back, ROWS)


def test_from_array_sends_float32_whatever_it_is_given():
    tensor = from_array(ROWS.astype(np.float64))
    assert tensor.dtype == types_pb2.DT_FLOAT and len(tensor.tensor_content) == ROWS.size * 4


@pytest.mark.parametrize("tensor, dtype", [
    (tensor_proto(types_pb2.DT_FLOAT, [3, 4], float_val=ROWS.ravel().tolist()), np.float32),
    (tensor_proto(types_pb2.DT_DOUBLE, [3, 4], double_val=ROWS.astype(np.float64).ravel().tolist()), np.float64),
    (tensor_proto(types_pb2.DT_DOUBLE, [3, 4], tensor_content=ROWS.astype(np.float64).tobytes()), np.float64),
    (tensor_proto(types_pb2.DT_HALF, [3, 4], tensor_content=ROWS.astype(np.float16).tobytes()), np.float16),
    (tensor_proto(types_pb2.DT_HALF, [3, 4], half_val=ROWS.astype(np.float16).view(np.uint16).ravel().tolist()), np.float16),
], ids=["float_val", "double_val", "double-content", "half-content", "half_val"])
def test_every_float_encoding_reads_as_the_same_numbers(tensor, dtype):
    x = to_array(tensor, "features")
    assert x.dtype == dtype and x.shape == (3, 4)
    assert np.array_equal(x, ROWS.astype(dtype))


@pytest.mark.parametrize("tensor, words", [
    (tensor_proto(types_pb2.DT_INT32, [1, 2], int_val=[1, 2]), "has dtype DT_INT32; expected one of DT_FLOAT"),
    (tensor_proto(types_pb2.DT_FLOAT, [2, 4], float_val=[1.0] * 4), "holds 4 values but its shape [2, 4] needs 8"),
    (tensor_proto(types_pb2.DT_FLOAT, [2, 4], tensor_content=b"\0" * 12), "holds 3 values but its shape [2, 4] needs 8"),
    (tensor_proto(types_pb2.DT_FLOAT, [1, 2], tensor_content=b"\0" * 5), "tensor_content of 5 bytes is not a whole number of DT_FLOAT"),
], ids=["int32", "too-few-values", "too-few-bytes", "partial-value"])
def test_malformed_tensor_protos_are_request_errors(tensor, words):
    with pytest.raises(RequestError) as info:
        to_array(tensor, "features")
    assert words in str(info.value) and "'features'" in str(info.value)


@pytest.mark.parametrize("tensor, raw, dtype", [
    (v2_tensor("FP32", [3, 4]), ROWS.astype("<f4").tobytes(), np.float32),
    (v2_tensor("FP64", [3, 4]), ROWS.astype("<f8").tobytes(), np.float64),
    (v2_tensor("FP16", [3, 4]), ROWS.astype("<f2").tobytes(), np.float16),
    (v2_tensor("FP32", [3, 4], fp32_contents=ROWS.ravel().tolist()), None, np.float32),
    (v2_tensor("FP64", [3, 4], fp64_contents=ROWS.astype(np.float64).ravel().tolist()), None, np.float64),
], ids=["fp32-raw", "fp64-raw", "fp16-raw", "fp32-contents", "fp64-contents"])
def test_v2_inputs_read_as_the_same_numbers(tensor, raw, dtype):
    x = v2_to_array(tensor, raw)
    assert x.shape == (3, 4) and np.array_equal(x, ROWS.astype(dtype))


@pytest.mark.parametrize("tensor, raw, words", [
    (v2_tensor("INT32", [1, 4]), b"\0" * 16, "datatype INT32; expected one of FP16, FP32, FP64"),
    (v2_tensor("", [1, 4]), b"\0" * 16, "datatype (none)"),
    (v2_tensor("FP32", [-1, 4]), b"\0" * 16, "negative dimension in its shape [-1, 4]"),
    (v2_tensor("FP32", [2, 4]), b"\0" * 16, "16 raw bytes, but shape [2, 4] of FP32 needs 32"),
    (v2_tensor("FP32", [2, 4], fp32_contents=[1.0] * 4), None, "holds 4 values but its shape [2, 4] needs 8"),
    (v2_tensor("FP16", [1, 4]), None, "FP16 data must come as raw_input_contents"),
], ids=["int32", "no-datatype", "negative-dim", "raw-length", "contents-count", "fp16-contents"])
def test_malformed_v2_inputs_are_request_errors(tensor, raw, words):
    with pytest.raises(RequestError) as info:
        v2_to_array(tensor, raw)
    assert words in str(info.value) and "'features'" in str(info.value)


def test_v2_outputs_are_little_endian_fp32():
    datatype, shape, raw = array_to_v2_raw(ROWS.astype(">f8"))
    assert (datatype, shape) == ("FP32", [3, 4])
    assert np.array_equal(np.frombuffer(raw, "<f4").reshape(shape), ROWS)
