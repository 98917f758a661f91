"""The `serve` stage: a gRPC server (TF Serving API, health, reflection) with Prometheus metrics."""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from tensorflow_serving.apis import prediction_service_pb2, prediction_service_pb2_grpc

from fpgaflow.inference.backends import load_backend
from fpgaflow.inference.interceptor import ErrorsAndMetrics
from fpgaflow.inference.metrics import ServerMetrics
from fpgaflow.inference.model import ServedModel
from fpgaflow.inference.servicer import PredictionServicer
from fpgaflow.preprocess import Scaler
from fpgaflow.trial import TrialDir, read_json

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8500
    metrics_port: int = 8000
    workers: int = 16
    grace_seconds: float = 10.0


def served_model(trial: TrialDir, target: str, metrics: ServerMetrics | None = None) -> ServedModel:
    train = trial.stage_dir("train")
    backend = load_backend(trial, target)
    dataset = read_json(train / "dataset.json")
    return ServedModel(
        name=trial.experiment,
        version=1,
        scaler=Scaler.load(train / "scaler.json"),
        classes=tuple(dataset["classes"]),
        backend=backend,
        metrics=metrics,
        extra={"target": target, "backend": backend.description, "trial": trial.root.name},
    )


def build_server(model: ServedModel, metrics: ServerMetrics, settings: ServerSettings) -> tuple[grpc.Server, int, health.HealthServicer]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
        interceptors=[ErrorsAndMetrics(metrics)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(model), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (PREDICTION_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    return server, port, health_servicer


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", PREDICTION_SERVICE):
        health_servicer.set(service, status)


def run(trial: TrialDir, target: str, settings: ServerSettings) -> int:
    """Serve until SIGTERM or SIGINT; then turn unready, let in-flight requests finish, and exit 0."""
    metrics = ServerMetrics(trial.experiment, target)
    model = served_model(trial, target, metrics)
    metrics.info.labels(model.name, target).info({"backend": model.extra["backend"], "trial": trial.root.name})
    server, port, health_servicer = build_server(model, metrics, settings)
    http_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    server.start()
    set_serving(health_servicer, True)
    out = trial.stage_dir("serve") / target
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "target": target,
        "address": f"{settings.host}:{port}",
        "metrics": f"http://{settings.host}:{settings.metrics_port}/metrics",
        "model": model.name,
        "backend": model.extra["backend"],
        "pid": os.getpid(),
    }
    (out / "server.json").write_text(json.dumps(info, indent=1))
    print(f"serving {model.name!r} on {target} at {info['address']} ({model.extra['backend']}); metrics at {info['metrics']}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    set_serving(health_servicer, False)
    server.stop(settings.grace_seconds).wait()
    http_server.shutdown()
    print(f"{target} server stopped", flush=True)
    return 0
