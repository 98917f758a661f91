"""The native front's Python side: the frames it reads and writes, the handlers it finds as gRPC would, and
how a call's outcome becomes a status (the Go side and the whole path are tested in test_serving_api.py)."""

from __future__ import annotations

import asyncio
import struct

import grpc
import pytest

from fpgaflow_inference.front import (
    Call,
    CallsProtocol,
    MethodTable,
    answer,
    reply_frame,
    resolve,
    unary_methods,
)
from fpgaflow_inference.interceptor import INFERENCE_SERVICES


def request_frame(call_id: int, method: int, body: bytes) -> bytes:
    return struct.pack("<IIH", 6 + len(body), call_id, method) + body


def read_replies(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """(call id, code, message, body) of each reply frame in ``data``."""
    replies = []
    while data:
        size, call_id, code, n = struct.unpack_from("<IIBI", data)
        frame, data = data[4:4 + size], data[4 + size:]
        replies.append((call_id, code, frame[9:9 + n].decode(), frame[9 + n:]))
    return replies


class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written = bytearray()

    def write(self, data):
        self.written += data

    def is_closing(self):
        return False


async def upper(request: bytes, context) -> bytes:
    if request == b"bad":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "'bad' is not a word")
    if request == b"bug":
        raise ZeroDivisionError("no")
    await asyncio.sleep(0)  # answers come back in any order: each carries its call id
    return request.upper()


ECHO = Call(parse=bytes, behaviour=upper, serialize=bytes)


def test_frames_split_anywhere_are_read_whole_and_each_call_is_answered_by_its_id():
    async def main():
        protocol = CallsProtocol([ECHO, Call(bytes, upper, lambda r: r + b"!")])
        transport = Transport()
        protocol.connection_made(transport)
        stream = request_frame(7, 0, b"abc") + request_frame(8, 1, b"") + request_frame(9, 0, b"x" * 70_000)
        for cut in range(0, len(stream), 5):  # a read may end anywhere, even inside a length
            protocol.data_received(stream[cut:cut + 5])
        for _ in range(5):
            await asyncio.sleep(0)
        return read_replies(bytes(transport.written))

    replies = sorted(asyncio.run(main()))
    assert replies == [(7, 0, "", b"ABC"), (8, 0, "", b"!"), (9, 0, "", b"X" * 70_000)]


def test_an_abort_gives_its_code_and_message_and_a_bug_is_internal_with_its_reason():
    async def main():
        return [await answer(ECHO, body) for body in (b"bad", b"bug", b"ok")]

    bad, bug, ok = asyncio.run(main())
    assert bad == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "'bad' is not a word", b"")
    assert bug == (grpc.StatusCode.INTERNAL.value[0], "ZeroDivisionError: no", b"")
    assert ok == (0, "", b"OK")


def test_a_request_that_does_not_parse_is_internal_as_grpc_answers_it():
    def parse(body: bytes):
        raise ValueError("truncated")

    code, message, body = asyncio.run(answer(Call(parse, upper, bytes), b"\xff"))
    assert (code, body) == (grpc.StatusCode.INTERNAL.value[0], b"")
    assert message.startswith("Exception deserializing request")


def test_a_reply_frame_carries_its_length_id_code_and_message():
    frame = reply_frame(3, 5, "model 'x' is not served here", b"\x01\x02")
    assert read_replies(frame) == [(3, 5, "model 'x' is not served here", b"\x01\x02")]
    assert struct.unpack_from("<I", frame)[0] == len(frame) - 4


def test_the_front_takes_every_unary_method_of_the_inference_apis_and_finds_each_handler():
    from fpgaflow_inference.dataplane import DataPlane
    from fpgaflow_inference.server import add_inference_services

    methods = unary_methods(INFERENCE_SERVICES)
    assert {"/inference.GRPCInferenceService/ModelInfer", "/tensorflow.serving.PredictionService/Predict",
            "/inference.GRPCInferenceService/ModelConfig", "/tensorflow.serving.ModelService/GetModelStatus"} <= set(methods)
    assert not any("Stream" in m for m in methods)  # Triton's streaming calls stay with the gRPC server
    table = MethodTable()
    add_inference_services(DataPlane([]), table)

    class Through(grpc.aio.ServerInterceptor):  # stands for ErrorsAndMetrics: the front's handlers are its
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            return grpc.unary_unary_rpc_method_handler(handler.unary_unary, request_deserializer=handler.request_deserializer,
                                                       response_serializer=lambda r: b"wrapped")

    calls = asyncio.run(resolve(table, methods, Through()))
    assert len(calls) == len(methods) and all(call.serialize(None) == b"wrapped" for call in calls)
    with pytest.raises(KeyError):
        table.handler("/inference.GRPCInferenceService/NoSuchMethod")
