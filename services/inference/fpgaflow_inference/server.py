"""The `serve` stage: one asyncio gRPC server speaking TF Serving's PredictionService and ModelService,
the Open Inference Protocol v2, grpc.health.v1 and reflection, with Prometheus metrics over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from fpgaflow.errors import ConfigError
from fpgaflow.preprocess import Scaler
from fpgaflow.spec import ServeSpec
from fpgaflow.trial import ModelVersion, TrialDir, model_versions, read_json, write_json
from fpgaflow_inference.backends import load_backend
from fpgaflow_inference.batching import BatchPolicy
from fpgaflow_inference.dataplane import DataPlane, State
from fpgaflow_inference.front import (
    GRPC_SOCKET,
    MethodTable,
    NativeFront,
    find_binary,
    resolve,
    start_front,
    unary_methods,
)
from fpgaflow_inference.interceptor import INFERENCE_SERVICES, ErrorsAndMetrics
from fpgaflow_inference.metrics import ServerMetrics
from fpgaflow_inference.model import ServedModel
from fpgaflow_inference.openinference import InferenceServicer
from fpgaflow_inference.pacing import DevicePacer
from fpgaflow_inference.tfserving import ModelServicer, PredictionServicer
from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc

SERVICES = tuple(service.full_name for service in INFERENCE_SERVICES)
FRONTS = ("auto", "native", "python")

QUIET_SECONDS = 0.25  # SIGTERM: the server stops once no prediction request has arrived for this long


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8500
    metrics_port: int = 8000
    workers: int | None = None  # back-end calls running at once; default: 1 with batching (batches fill
    # while the back end is busy, as with one Triton model instance), 4 without
    max_batch_size: int = 1  # 1: dynamic batching off
    max_latency_micros: int = 0
    compute_threads: int = 1  # threads one back-end call may use (TensorFlow's per op; OMP_NUM_THREADS)
    inline_below_micros: int = 300  # back-end calls shorter than this run on the event loop (batching.py); 0: never
    pacing: bool = False  # fpga: answers paced to one modelled device
    grace_seconds: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    max_message_bytes: int = 64 * 1024 * 1024
    max_concurrent_streams: int = 0  # per connection; 0: gRPC's default
    tls_cert: Path | None = None
    tls_key: Path | None = None
    front: str = "auto"  # who holds the port: the native front (front.py), Python's gRPC server, or (auto) the
    # native front where its executable is installed, else Python's server

    @classmethod
    def from_spec(cls, serve: ServeSpec, **overrides) -> ServerSettings:
        """The spec's serving choices, then whatever the command line sets (None: not set)."""
        base = cls()
        if serve.batching is not None:
            base = replace(base, max_batch_size=serve.batching.max_batch_size, max_latency_micros=serve.batching.max_latency_micros)
        base = replace(base, pacing=serve.fpga_pacing)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def policy(self) -> BatchPolicy:
        batching = self.max_batch_size > 1
        workers = self.workers if self.workers is not None else (1 if batching else 4)
        return BatchPolicy(self.max_batch_size, self.max_latency_micros / 1e6, workers, self.inline_below_micros / 1e6)

    def credentials(self) -> grpc.ServerCredentials | None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if self.tls_cert is None:
            return None
        try:
            key, cert = Path(self.tls_key).read_bytes(), Path(self.tls_cert).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS files: {exc}") from exc
        return grpc.ssl_server_credentials([(key, cert)])

    def grpc_options(self) -> list[tuple[str, int]]:
        options = [("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.max_send_message_length", self.max_message_bytes)]
        if self.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.max_concurrent_streams))
        return options

    def front_options(self) -> list[str]:
        """The same transport settings for the native front."""
        options = ["--max-message-bytes", str(self.max_message_bytes), "--grace", f"{self.grace_seconds}s"]
        if self.max_concurrent_streams:
            options += ["--max-concurrent-streams", str(self.max_concurrent_streams)]
        if self.tls_cert is not None:
            options += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        return options

    def check(self) -> Path | None:
        """Settings that cannot work fail before the model loads; the native front's executable, if it is used."""
        self.credentials()
        if self.front not in FRONTS:
            raise ConfigError(f"unknown front {self.front!r}: one of {', '.join(FRONTS)}")
        if self.front == "python":
            return None
        try:
            return find_binary()
        except ConfigError:
            if self.front == "native":
                raise
            return None


def served_model(trial: TrialDir, target: str, settings: ServerSettings, metrics: ServerMetrics | None = None,
                 version: ModelVersion | None = None) -> ServedModel:
    """One version of the trial's model (version 1, as trained, by default) served on ``target``."""
    version = version or model_versions(trial)[0]
    train = trial.stage_dir("train")
    backend = load_backend(version, target, settings.compute_threads)
    pacer = None
    if settings.pacing and target == "fpga":
        timing = getattr(backend, "timing", None)
        if not timing:
            raise ConfigError("pacing needs the converter's device timing (convert/timing.json); convert the trial again")
        pacer = DevicePacer(timing["latency_ns"] * 1e-9, timing["ii_ns"] * 1e-9)
    return ServedModel(
        name=trial.experiment,
        version=version.number,
        scaler=Scaler.load(train / "scaler.json"),
        classes=tuple(read_json(train / "dataset.json")["classes"]),
        backend=backend,
        policy=settings.policy,
        pacer=pacer,
        metrics=metrics,
        extra={"trial": trial.root.name, "version": f"{version.number}: {version.description}"},
    )


def add_inference_services(plane: DataPlane, *servers) -> None:
    """The inference APIs' servicers, the same ones on each of ``servers`` (a gRPC server, a MethodTable)."""
    servicers = PredictionServicer(plane), ModelServicer(plane), InferenceServicer(plane)
    for server in servers:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicers[0], server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicers[1], server)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicers[2], server)


def build_server(plane: DataPlane, interceptor: ErrorsAndMetrics, settings: ServerSettings, address: str,
                 table: MethodTable) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The gRPC server on ``address`` (host:port, or unix:path behind the native front), its inference servicers
    also registered in ``table``, where the native front finds them."""
    server = grpc.aio.server(interceptors=[interceptor], options=settings.grpc_options())
    add_inference_services(plane, server, table)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    credentials = settings.credentials() if not address.startswith("unix:") else None
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    return server, port, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", *SERVICES):
        await health_servicer.set(service, status)


async def drain(plane: DataPlane, server: grpc.aio.Server, health_servicer, grace_seconds: float,
                front: NativeFront | None = None) -> None:
    """SIGTERM: unready at once (new requests are refused with UNAVAILABLE), accepted requests finish
    and requests stop arriving, within the grace period, then the server stops. Stopping while requests
    still arrive would cancel them: gRPC cancels (CANCELLED, not retried) the calls it has received and
    not yet handed to the server, and those that arrive while it stops."""
    plane.state = State.DRAINING
    await set_serving(health_servicer, False)
    deadline = time.monotonic() + grace_seconds
    while (plane.active or time.monotonic() - plane.last_arrival < QUIET_SECONDS) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    if front is not None:
        await front.stop(max(deadline - time.monotonic(), 0.0))
    await server.stop(max(deadline - time.monotonic(), 0.0))
    for model in plane.models.values():
        await model.stop()


async def serve(trial: TrialDir, target: str, settings: ServerSettings) -> int:
    binary = settings.check()  # before the model loads
    metrics = ServerMetrics(trial.experiment, target)
    plane = DataPlane([served_model(trial, target, settings, metrics, version) for version in model_versions(trial)])
    model = plane.model  # the latest version: what a request without a version gets
    metrics.info.labels(model.name, target).info({"backend": model.backend.description, "trial": trial.root.name,
                                                  "batching": "on" if model.policy.enabled else "off"})
    metrics.pacing.labels(model.name, target).set(1 if model.pacer is not None else 0)
    interceptor = ErrorsAndMetrics(metrics)
    sockets = Path(tempfile.mkdtemp(prefix="fpgaflow-serve-")) if binary else None  # the native front's
    try:
        return await serve_until_stopped(plane, metrics, interceptor, settings, trial.stage_dir("serve") / target,
                                         binary, sockets)
    finally:
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)


async def serve_until_stopped(plane: DataPlane, metrics: ServerMetrics, interceptor: ErrorsAndMetrics,
                              settings: ServerSettings, out: Path, binary: Path | None, sockets: Path | None) -> int:
    """Start the servers (behind the native front where ``binary``, with its sockets in ``sockets``), say so in
    ``out``/server.json, serve until a signal (or the front's exit), drain and stop."""
    model, target = plane.model, metrics.target
    table = MethodTable()
    address = f"unix:{sockets / GRPC_SOCKET}" if sockets else f"{settings.host}:{settings.port}"
    server, port, health_servicer = build_server(plane, interceptor, settings, address, table)
    http_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    for each in plane.models.values():
        each.start()
    await server.start()
    front = None
    if binary and sockets:
        methods = unary_methods(INFERENCE_SERVICES)
        front = await start_front(binary, await resolve(table, methods, interceptor), methods, sockets,
                                  f"{settings.host}:{settings.port}", settings.front_options())
        port = front.port
    plane.state = State.SERVING
    await set_serving(health_servicer, True)

    scheme = "grpcs" if settings.tls_cert else "grpc"
    info = {"target": target, "address": f"{settings.host}:{port}", "tls": settings.tls_cert is not None,
            "metrics": f"http://{settings.host}:{settings.metrics_port}/metrics", "model": model.name,
            "versions": sorted(plane.models), "pid": os.getpid(), "front": "native" if front else "python",
            **model.facts()}
    write_json(out / "server.json", info)  # the local runner takes it as the sign that the server is ready
    print(f"serving {model.name!r} on {target} at {scheme}://{info['address']} ({info['backend']}; batching "
          f"{json.dumps(info['batching'])}; pacing {info['pacing']}; {info['front']} front); metrics at {info['metrics']}",
          flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if front is not None:  # the front gone, the port is: the server stops with it (and says so, exit 1)
        front_exit = asyncio.ensure_future(front.process.wait())
        front_exit.add_done_callback(lambda _: stop.set())
    await stop.wait()
    lost = front is not None and front.process.returncode is not None
    if front is not None and lost:
        print(f"{target} server: the native front exited (code {front.process.returncode}); stopping", flush=True)
    print(f"{target} server: shutting down, {plane.active} request(s) in flight", flush=True)
    await drain(plane, server, health_servicer, settings.grace_seconds, front)
    http_server.shutdown()
    print(f"{target} server stopped: {plane.accepted} prediction(s) accepted, {plane.answered} answered, "
          f"{plane.refused} refused while not serving", flush=True)
    return 1 if lost else 0


def run(trial: TrialDir, target: str, settings: ServerSettings) -> int:
    """Serve until SIGTERM or SIGINT; then turn unready, let in-flight requests finish, and exit 0."""
    return asyncio.run(serve(trial, target, settings))
