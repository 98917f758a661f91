"""The `serve` stage: one asyncio gRPC server speaking TF Serving's PredictionService and ModelService,
the Open Inference Protocol v2, grpc.health.v1 and reflection, with Prometheus metrics over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from fpgaflow.errors import ConfigError
from fpgaflow.preprocess import Scaler
from fpgaflow.spec import ServeSpec
from fpgaflow.trial import ModelVersion, TrialDir, model_versions, read_json, write_json
from fpgaflow_inference.backends import load_backend
from fpgaflow_inference.batching import BatchPolicy
from fpgaflow_inference.dataplane import DataPlane, State
from fpgaflow_inference.interceptor import ErrorsAndMetrics
from fpgaflow_inference.metrics import ServerMetrics
from fpgaflow_inference.model import ServedModel
from fpgaflow_inference.openinference import InferenceServicer
from fpgaflow_inference.pacing import DevicePacer
from fpgaflow_inference.tfserving import ModelServicer, PredictionServicer
from fpgaflow_inference.v2 import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc

SERVICES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    "tensorflow.serving.ModelService",
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)

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


def build_server(plane: DataPlane, metrics: ServerMetrics, settings: ServerSettings) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    server = grpc.aio.server(interceptors=[ErrorsAndMetrics(metrics)], options=settings.grpc_options())
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(plane), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(plane), server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    credentials = settings.credentials()
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    return server, port, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", *SERVICES):
        await health_servicer.set(service, status)


async def drain(plane: DataPlane, server: grpc.aio.Server, health_servicer, grace_seconds: float) -> None:
    """SIGTERM: unready at once (new requests are refused with UNAVAILABLE), accepted requests finish
    and requests stop arriving, within the grace period, then the server stops. Stopping while requests
    still arrive would cancel them: gRPC cancels (CANCELLED, not retried) the calls it has received and
    not yet handed to the server, and those that arrive while it stops."""
    plane.state = State.DRAINING
    await set_serving(health_servicer, False)
    deadline = time.monotonic() + grace_seconds
    while (plane.active or time.monotonic() - plane.last_arrival < QUIET_SECONDS) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await server.stop(max(deadline - time.monotonic(), 0.0))
    for model in plane.models.values():
        await model.stop()


async def serve(trial: TrialDir, target: str, settings: ServerSettings) -> int:
    settings.credentials()  # bad TLS settings fail before the model loads
    metrics = ServerMetrics(trial.experiment, target)
    plane = DataPlane([served_model(trial, target, settings, metrics, version) for version in model_versions(trial)])
    model = plane.model  # the latest version: what a request without a version gets
    metrics.info.labels(model.name, target).info({"backend": model.backend.description, "trial": trial.root.name,
                                                  "batching": "on" if model.policy.enabled else "off"})
    metrics.pacing.labels(model.name, target).set(1 if model.pacer is not None else 0)
    server, port, health_servicer = build_server(plane, metrics, settings)
    http_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    for each in plane.models.values():
        each.start()
    await server.start()
    plane.state = State.SERVING
    await set_serving(health_servicer, True)

    out = trial.stage_dir("serve") / target
    scheme = "grpcs" if settings.tls_cert else "grpc"
    info = {"target": target, "address": f"{settings.host}:{port}", "tls": settings.tls_cert is not None,
            "metrics": f"http://{settings.host}:{settings.metrics_port}/metrics", "model": model.name,
            "versions": sorted(plane.models), "pid": os.getpid(), **model.facts()}
    write_json(out / "server.json", info)  # the local runner takes it as the sign that the server is ready
    print(f"serving {model.name!r} on {target} at {scheme}://{info['address']} ({info['backend']}; batching "
          f"{json.dumps(info['batching'])}; pacing {info['pacing']}); metrics at {info['metrics']}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"{target} server: shutting down, {plane.active} request(s) in flight", flush=True)
    await drain(plane, server, health_servicer, settings.grace_seconds)
    http_server.shutdown()
    print(f"{target} server stopped: {plane.accepted} prediction(s) accepted, {plane.answered} answered, "
          f"{plane.refused} refused while not serving", flush=True)
    return 0


def run(trial: TrialDir, target: str, settings: ServerSettings) -> int:
    """Serve until SIGTERM or SIGINT; then turn unready, let in-flight requests finish, and exit 0."""
    return asyncio.run(serve(trial, target, settings))
