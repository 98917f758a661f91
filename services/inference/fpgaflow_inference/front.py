"""The native front (`fpgaflow serve --front native`, and the default where its executable is installed): a Go
process (services/inference/front) holds the public port and does gRPC's transport, and hands each prediction call to this process as one frame on a Unix socket.
Here a frame goes through the very handlers the Python gRPC server registers, wrapped by the same
interceptor, so the parsing, validation, batching, metrics and error rules are the server's own; only gRPC's
per-call machinery in Python (its completion queue, a task and a context per call) is left out. The other
methods (health, reflection) the front relays to the Python gRPC server, which then listens on a Unix socket.

Frames, little-endian, each after a uint32 length (the Go side's main.go says the same):
    request:  uint32 call id | uint16 method index (in the order of ``methods``) | request bytes
    response: uint32 call id | uint8 status code | uint32 message length | message (UTF-8) | response bytes
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from fpgaflow.errors import ConfigError

BINARY = "fpgaflow-front"
REQUEST_HEAD = struct.Struct("<IH")  # call id, method index (after the frame's length)
REPLY_HEAD = struct.Struct("<IIBI")  # frame length, call id, status code, message length
READY_SECONDS = 30.0
GRPC_SOCKET = "grpc.sock"  # the Python gRPC server's socket, in the front's folder of sockets


def find_binary() -> Path:
    """The front's executable: $FPGAFLOW_FRONT, else fpgaflow-front beside this Python (`make install` puts it
    in the venv's bin) or on PATH."""
    named = os.environ.get("FPGAFLOW_FRONT")
    if named:
        if not os.access(named, os.X_OK):
            raise ConfigError(f"FPGAFLOW_FRONT={named} is not an executable file")
        return Path(named)
    beside = Path(sys.executable).parent / BINARY
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which(BINARY)
    if not found:
        raise ConfigError(f"--front native needs the {BINARY} executable (services/inference/front; `make install` "
                          "builds it with Go), or FPGAFLOW_FRONT naming it; --front python needs none")
    return Path(found)


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str):
        self.method, self.invocation_metadata = method, ()


class MethodTable:
    """Stands in for a gRPC server when the generated ``add_*Servicer_to_server`` functions register their
    handlers, and finds a method's handler as gRPC would."""

    def __init__(self):
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        pass  # the same handlers as the generic one registered with them

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        for generic in self._generic:
            found = generic.service(_Details(method))
            if found is not None:
                return found
        raise KeyError(method)


def unary_methods(services) -> list[str]:
    """The full names (/package.Service/Method) of the services' unary methods, from their descriptors."""
    return [f"/{service.full_name}/{m.name}" for service in services for m in service.methods
            if not m.client_streaming and not m.server_streaming]


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        self.code, self.message = code, message


class _Context:
    """What the handlers use of gRPC's servicer context: abort."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()):
        raise _Aborted(code, details)


CONTEXT = _Context()


@dataclass
class Call:
    """One method's path through this side: the request parser, the (intercepted) behaviour, the serializer."""
    parse: Callable
    behaviour: Callable
    serialize: Callable


async def resolve(table: MethodTable, methods: list[str], interceptor: grpc.aio.ServerInterceptor) -> list[Call]:
    """Each method's handler as the gRPC server would run it: through the interceptor."""
    calls = []
    for method in methods:
        async def continuation(details, method=method):
            return table.handler(method)

        handler = await interceptor.intercept_service(continuation, _Details(method))
        calls.append(Call(handler.request_deserializer, handler.unary_unary, handler.response_serializer))
    return calls


def reply_frame(call_id: int, code: int, message: str, body: bytes) -> bytes:
    text = message.encode()
    return REPLY_HEAD.pack(REPLY_HEAD.size - 4 + len(text) + len(body), call_id, code, len(text)) + text + body


async def answer(call: Call, body: bytes) -> tuple[int, str, bytes]:
    """A call's status code, message and response bytes."""
    try:
        request = call.parse(body)
    except Exception as exc:  # what gRPC answers for bytes that do not parse as the request message
        return grpc.StatusCode.INTERNAL.value[0], f"Exception deserializing request! ({type(exc).__name__})", b""
    try:
        response = await call.behaviour(request, CONTEXT)
    except _Aborted as aborted:
        return aborted.code.value[0], aborted.message, b""
    except Exception as exc:  # the interceptor maps every error: this is a bug in the front's side
        return grpc.StatusCode.INTERNAL.value[0], f"{type(exc).__name__}: {exc}", b""
    return 0, "", call.serialize(response)


class CallsProtocol(asyncio.Protocol):
    """The Go front's connection: frames in, one task per call, replies out as they finish."""

    def __init__(self, calls: list[Call]):
        self._calls = calls
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._replies: list[bytes] = []  # answers not yet written: together, once the loop has run what is ready
        self._active = 0  # calls read and not yet answered
        self._tasks: set[asyncio.Task] = set()  # the calls' tasks, held until done (the loop holds them weakly)

    def connection_made(self, transport):
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start, end = 0, len(buffer)
        loop = asyncio.get_running_loop()
        while end - start >= 4:
            size = int.from_bytes(buffer[start:start + 4], "little")
            if end - start - 4 < size:
                break
            call_id, index = REQUEST_HEAD.unpack_from(buffer, start + 4)
            body = bytes(buffer[start + 4 + REQUEST_HEAD.size:start + 4 + size])
            start += 4 + size
            self._active += 1
            task = loop.create_task(self._run(call_id, self._calls[index], body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        del buffer[:start]

    async def _run(self, call_id: int, call: Call, body: bytes) -> None:
        code, message, response = await answer(call, body)
        self._active -= 1
        self._replies.append(reply_frame(call_id, code, message, response))
        if self._active == 0:  # the only call: its answer goes now
            self._flush()
        elif len(self._replies) == 1:  # others are under way: the answers ready in this turn of the loop go in one write
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if not self._replies:
            return
        replies, self._replies = self._replies, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(replies[0] if len(replies) == 1 else b"".join(replies))


class NativeFront:
    """The Go front's process, serving the public port, and this side's end of its calls socket."""

    def __init__(self, process: asyncio.subprocess.Process, server: asyncio.AbstractServer, address: str):
        self.process, self._server, self.address = process, server, address

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking calls (the front finishes those in flight, within the grace period), then close."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), grace_seconds + 5)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._server.close()
        await self._server.wait_closed()


async def start_front(binary: Path, calls: list[Call], methods: list[str], folder: Path, listen: str,
                      options: list[str]) -> NativeFront:
    """The calls socket in ``folder``, then the front on ``listen``, relaying other methods to the Python gRPC
    server's socket there (GRPC_SOCKET); returns once the front listens. ``options``: the front's TLS and
    message-size flags."""
    path = folder / "calls.sock"
    server = await asyncio.get_running_loop().create_unix_server(lambda: CallsProtocol(calls), str(path))
    process = await asyncio.create_subprocess_exec(
        str(binary), "--listen", listen, "--calls", str(path), "--grpc", str(folder / GRPC_SOCKET), "--unary", ",".join(methods),
        *options, stdout=asyncio.subprocess.PIPE, start_new_session=True)  # signals reach it from this side only
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_SECONDS)
    except asyncio.TimeoutError:
        line = b""
    if not line.startswith(b"listening on "):
        if process.returncode is None:
            process.kill()
        code = await process.wait()
        server.close()
        raise OSError(f"the native front ({binary}) did not start on {listen} (exit code {code}; its log above says why)")
    return NativeFront(process, server, line.decode().split()[-1])
