"""`fpgaflow server`: the manager behind gRPC (protos/fpgaflow_manager.proto).

- **Who may call.** Every call carries the server's token (metadata ``authorization: Bearer TOKEN``), or the
  connection presents a TLS client certificate signed by ``--tls-client-ca``; anything else is refused with
  UNAUTHENTICATED before a handler runs. On loopback without ``--token-file`` the server makes a token and
  writes it with its address to ``<home>/server.json`` (mode 0600), where clients on this machine that share
  the run store find it. Listening on any other address needs a token file or client certificates.
- **Errors.** fpgaflow's errors become status codes here, once (``CODES``), with the error's reason and, for a
  bad manifest, its problems in the trailing metadata; the client maps them back.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc

from fpgaflow.errors import (
    AlreadyQueued,
    ConfigError,
    FpgaflowError,
    NotFound,
    SpecError,
    StaleResult,
    StoreFull,
    Unauthenticated,
)
from fpgaflow_manager import DEFAULT_PORT, SERVER_FILE
from fpgaflow_manager.manager import Manager, pause
from fpgaflow_manager.rpc import fpgaflow_manager_pb2 as pb
from fpgaflow_manager.rpc import fpgaflow_manager_pb2_grpc as pb_grpc

CODES: dict[type[FpgaflowError], grpc.StatusCode] = {
    SpecError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyQueued: grpc.StatusCode.ALREADY_EXISTS,
    StaleResult: grpc.StatusCode.FAILED_PRECONDITION,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    StoreFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}
LOG_CHUNK = 64 * 1024


def status_for(exc: FpgaflowError) -> grpc.StatusCode:
    return next((CODES[cls] for cls in type(exc).__mro__ if cls in CODES), grpc.StatusCode.INTERNAL)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ListenSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # clients must present a certificate this CA signed (then no token is needed)

    def check(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs the server's own certificate and key (--tls-cert, --tls-key)")
        if not is_loopback(self.host) and not (self.token_file or self.tls_client_ca):
            raise ConfigError(f"listening on {self.host}, beyond this machine, needs a token (--token-file) or TLS "
                              "client certificates (--tls-client-ca): anyone who reaches the port could run experiments")

    def token(self, home: Path) -> str | None:
        """The token calls must carry: the token file's, or a new one on loopback; None with client certificates
        and no token file."""
        if self.token_file:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the token file {self.token_file}: {exc.strerror}") from None
            if len(token) < 16:
                raise ConfigError(f"the token in {self.token_file} is too short: use at least 16 characters")
            return token
        return None if self.tls_client_ca else secrets.token_urlsafe(32)

    def credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls_cert:
            return None
        try:
            key, cert = Path(self.tls_key).read_bytes(), self.tls_cert.read_bytes()  # type: ignore[arg-type]
            ca = self.tls_client_ca.read_bytes() if self.tls_client_ca else None
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS files: {exc}") from None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


class TokenCheck(grpc.ServerInterceptor):
    """Refuses a call without the token (when the server has one) before any handler runs."""

    def __init__(self, token: str | None):
        self._token = token

    def intercept_service(self, continuation, handler_call_details):
        if self._token is None:
            return continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[len("Bearer "):].encode(), self._token.encode()):
            return continuation(handler_call_details)
        why = "a wrong token" if given else "no token"

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"fpgaflow server refused the call: {why} (the server's token: --token-file or FPGAFLOW_TOKEN)")

        handler = continuation(handler_call_details)
        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def _abort(context, exc: FpgaflowError) -> None:
    metadata = [("reason", exc.reason)]
    if isinstance(exc, SpecError):
        metadata += [("problems", json.dumps(exc.problems)), ("source", exc.source)]
    context.set_trailing_metadata(metadata)
    context.abort(status_for(exc), str(exc))


def entry_message(e: dict) -> pb.Entry:
    return pb.Entry(id=e["id"], name=e["name"], state=e["state"], executor=e["executor"], priority=e["priority"],
                    submitted=e["submitted"], started=e["started"] or 0, finished=e["finished"] or 0,
                    position=e.get("position", 0), waiting=e.get("waiting", ""), trials=e["trials"], slots=e["slots"],
                    attempt=e["attempt"], reason=e["reason"] or "", message=e["message"] or "",
                    handle=json.dumps(e["handle"]) if e["handle"] else "")


class Servicer(pb_grpc.ExperimentManagerServicer):
    """Translates each call to the manager and back; fpgaflow's errors abort the call with their code."""

    def __init__(self, manager: Manager, stop: threading.Event):
        self.manager = manager
        self.stop = stop

    def Submit(self, request, context):
        try:
            git = json.loads(request.git_json) if request.git_json else {}
            return entry_message(self.manager.submit(
                request.manifest, request.source or "manifest", executor=request.executor,
                priority=request.priority if request.HasField("priority") else None, replace=request.replace, git=git))
        except FpgaflowError as exc:
            _abort(context, exc)

    def Queue(self, request, context):
        try:
            entries = self.manager.entries(all=request.all, name=request.name or None)
            used = self.manager.slots()
            return pb.QueueReply(entries=[entry_message(e) for e in entries], running_slots=sum(used.values()),
                                 max_slots=self.manager.settings.limits.max_slots)
        except FpgaflowError as exc:
            _abort(context, exc)

    def Cancel(self, request, context):
        try:
            return entry_message(self.manager.cancel(request.name))
        except FpgaflowError as exc:
            _abort(context, exc)

    def Watch(self, request, context):
        try:
            for snap in self.manager.watch(request.name, self._ended(context)):
                yield pb.WatchEvent(entry=entry_message(snap["entry"]), trials=[
                    pb.TrialProgress(name=t["name"], phase=t["phase"], stage=t["stage"], progress=t["progress"],
                                     parameters=json.dumps(t["parameters"]), accuracy_emulated=t["accuracy_emulated"] or 0)
                    for t in snap["trials"]])
        except FpgaflowError as exc:
            _abort(context, exc)

    def Logs(self, request, context):
        try:
            path = self.manager.log_path(request.name, request.trial, request.stage)
            ended = self._ended(context)
            with path.open("rb") as fh:
                if request.tail:
                    fh.seek(max(0, path.stat().st_size - request.tail))
                while not ended():
                    data = fh.read(LOG_CHUNK)
                    if data:
                        yield pb.LogChunk(path=str(path), data=data)
                        continue
                    if not request.follow or self.manager.latest(request.name)["state"] not in ("Queued", "Running"):
                        return
                    pause(0.5, ended)
        except FpgaflowError as exc:
            _abort(context, exc)

    def Resources(self, request, context):
        try:
            pools, used = self.manager.resources()
            limits = self.manager.settings.limits
            return pb.ResourcesReply(
                pools=[pb.Pool(executor=p.executor, name=p.name, cpus=p.cpus, cpus_free=p.cpus_free,
                               memory_bytes=p.memory_bytes, memory_free_bytes=p.memory_free_bytes, gpus=p.gpus,
                               gpus_free=p.gpus_free, note=p.note) for p in pools],
                slots_used=used, slot_limits={name: limits.of(name) for name in self.manager.executors},
                max_slots=limits.max_slots)
        except FpgaflowError as exc:
            _abort(context, exc)

    def _ended(self, context) -> Callable[[], bool]:
        """Whether a stream should end: its client went away or the server stops."""
        return lambda: self.stop.is_set() or not context.is_active()


def write_server_file(home: Path, address: str, token: str | None, tls: bool) -> Path:
    """``<home>/server.json``: where this machine's clients find the server and its token (0600)."""
    path = home / SERVER_FILE
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"address": address, "token": token, "tls": tls, "pid": os.getpid(),
                   "host": socket.gethostname()}, fh)
    os.replace(tmp, path)
    return path


def serve(manager: Manager, listen: ListenSettings, ready=None) -> int:
    """Run the server until SIGTERM or SIGINT: the gRPC port and the scheduling loop. ``ready(address)`` is
    called once it listens. Runs in progress go on after the server stops (a server started again finds them)."""
    listen.check()
    token = listen.token(manager.settings.home)
    credentials = listen.credentials()
    stop = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="rpc"),
                         interceptors=[TokenCheck(token)])
    pb_grpc.add_ExperimentManagerServicer_to_server(Servicer(manager, stop), server)
    bind = f"[{listen.host}]:{listen.port}" if ":" in listen.host else f"{listen.host}:{listen.port}"
    try:
        port = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {bind}: {exc}") from None
    address = f"{listen.host}:{port}"
    loop = threading.Thread(target=manager.run_forever, args=(stop,), name="scheduler", daemon=True)
    server.start()
    loop.start()
    write_server_file(manager.settings.home, address, token, credentials is not None)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    if ready:
        ready(address)
    stop.wait()
    server.stop(grace=2).wait()
    loop.join(timeout=30)
    (manager.settings.home / SERVER_FILE).unlink(missing_ok=True)
    return 0
