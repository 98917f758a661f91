"""The client of `fpgaflow server`, for the command line and for Python:

```python
from fpgaflow_manager.client import ManagerClient, connection
with ManagerClient(connection(Path("fpgaflow-runs"))) as client:
    entry = client.submit(Path("examples/jet-tagger.yaml"))
    for snapshot in client.watch(entry["name"]):
        print(snapshot["entry"]["state"], [t["stage"] for t in snapshot["trials"]])
```

Where the server is: ``--server`` or ``$FPGAFLOW_SERVER``, else the address a server on this machine wrote in
the run store (``<home>/server.json``), else ``127.0.0.1:7750``. Its token: ``--token-file`` or
``$FPGAFLOW_TOKEN``, else the one in ``server.json`` when that file names the same server. The server's
status codes become fpgaflow's errors here, once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from fpgaflow.errors import (
    AlreadyQueued,
    ConfigError,
    FpgaflowError,
    NotFound,
    ServerUnavailable,
    SpecError,
    StoreFull,
    Unauthenticated,
)
from fpgaflow.provenance import git_info
from fpgaflow_manager import DEFAULT_PORT, SERVER_FILE
from fpgaflow_manager.rpc import fpgaflow_manager_pb2 as pb
from fpgaflow_manager.rpc import fpgaflow_manager_pb2_grpc as pb_grpc

ERRORS: dict[grpc.StatusCode, type[FpgaflowError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyQueued,
    grpc.StatusCode.RESOURCE_EXHAUSTED: StoreFull,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: ConfigError,
}


@dataclass(frozen=True)
class Connection:
    address: str
    token: str | None = None
    tls_ca: Path | None = None  # the server's CA; with it the channel is TLS
    tls_cert: Path | None = None  # this client's certificate and key, for a server that asks for one
    tls_key: Path | None = None

    def channel(self) -> grpc.Channel:
        if self.tls_ca is None:
            return grpc.insecure_channel(self.address)
        try:
            ca = self.tls_ca.read_bytes()
            key = self.tls_key.read_bytes() if self.tls_key else None
            cert = self.tls_cert.read_bytes() if self.tls_cert else None
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS files: {exc}") from None
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(ca, key, cert))


def connection(home: Path, server: str | None = None, token_file: Path | None = None, tls_ca: Path | None = None,
               tls_cert: Path | None = None, tls_key: Path | None = None) -> Connection:
    """The server to call and its token (see the module's docstring)."""
    local = {}
    try:
        local = json.loads((home / SERVER_FILE).read_text())
    except (OSError, ValueError):
        pass
    address = server or os.environ.get("FPGAFLOW_SERVER") or local.get("address") or f"127.0.0.1:{DEFAULT_PORT}"
    if token_file:
        try:
            token: str | None = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get("FPGAFLOW_TOKEN") or (local.get("token") if local.get("address") == address else None)
    return Connection(address, token, tls_ca, tls_cert, tls_key)


def error_from(exc: grpc.RpcError, address: str) -> FpgaflowError:
    """The fpgaflow error a failed call stands for."""
    code, details = exc.code(), exc.details() or ""
    trailing = dict(exc.trailing_metadata() or ())
    if code == grpc.StatusCode.INVALID_ARGUMENT and "problems" in trailing:
        return SpecError([tuple(p) for p in json.loads(trailing["problems"])], trailing.get("source", "manifest"))
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailable(f"cannot reach fpgaflow server at {address} ({details}); start it with "
                                 "`fpgaflow server`, or name it with --server or FPGAFLOW_SERVER")
    cls = ERRORS.get(code, FpgaflowError)
    return cls(details, reason=trailing.get("reason") or cls.reason)


def as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def entry_dict(message: pb.Entry) -> dict:
    entry = as_dict(message)
    entry["id"] = int(entry["id"])
    entry["handle"] = json.loads(entry["handle"]) if entry["handle"] else {}
    return entry


class ManagerClient:
    def __init__(self, conn: Connection, timeout: float = 60.0):
        self.conn = conn
        self.timeout = timeout
        self._channel = conn.channel()
        self._stub = pb_grpc.ExperimentManagerStub(self._channel)
        self._metadata = (("authorization", f"Bearer {conn.token}"),) if conn.token else ()

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request, timeout: float | None = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from(exc, self.conn.address) from None

    def _stream(self, method: str, request) -> Iterator:
        try:
            yield from getattr(self._stub, method)(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from(exc, self.conn.address) from None

    def submit(self, path: Path, *, executor: str = "", priority: int | None = None, replace: bool = False) -> dict:
        """Queue a manifest file; its folder's git state goes with it (the run records it)."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError([("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
        return self.submit_text(text, str(path), executor=executor, priority=priority, replace=replace,
                                git=git_info(path.resolve().parent))

    def submit_text(self, text: str, source: str = "manifest", *, executor: str = "", priority: int | None = None,
                    replace: bool = False, git: dict | None = None) -> dict:
        request = pb.SubmitRequest(manifest=text, source=source, executor=executor, replace=replace,
                                   git_json=json.dumps(git or {}))
        if priority is not None:
            request.priority = priority
        return entry_dict(self._call("Submit", request))

    def queue(self, *, all: bool = False, name: str = "") -> dict:
        reply = self._call("Queue", pb.QueueRequest(all=all, name=name))
        return {"entries": [entry_dict(e) for e in reply.entries], "running_slots": reply.running_slots,
                "max_slots": reply.max_slots}

    def cancel(self, name: str) -> dict:
        return entry_dict(self._call("Cancel", pb.CancelRequest(name=name)))

    def watch(self, name: str) -> Iterator[dict]:
        """The experiment's state and its trials' progress each time they change, until it ends."""
        for event in self._stream("Watch", pb.WatchRequest(name=name)):
            trials = [{**as_dict(t), "parameters": json.loads(t.parameters or "{}")} for t in event.trials]
            yield {"entry": entry_dict(event.entry), "trials": trials}

    def logs(self, name: str, *, trial: str = "", stage: str = "", follow: bool = False, tail: int = 0) -> Iterator[bytes]:
        for chunk in self._stream("Logs", pb.LogsRequest(name=name, trial=trial, stage=stage, follow=follow, tail=tail)):
            yield chunk.data

    def resources(self) -> dict:
        return as_dict(self._call("Resources", pb.ResourcesRequest()))
