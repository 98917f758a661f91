"""The load generator and the `bench` stage.

N client processes each send M requests one after another (the SONIC setup), after a warm-up, and
keep every request's latency. Requests are serialized once in the parent with the stock TF Serving
protos; the clients send those bytes and import neither TensorFlow nor the model, so what is timed
is the server.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

PREDICT = "/tensorflow.serving.PredictionService/Predict"
N_PAYLOADS = 32
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class RunResult:
    target: str
    concurrency: int
    batch_size: int
    latencies_ms: np.ndarray  # of the successful requests
    errors: dict[str, int]
    wall_seconds: float

    def summary(self) -> dict:
        lat = self.latencies_ms
        ok = len(lat)
        row = {
            "target": self.target,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "requests": ok + sum(self.errors.values()),
            "ok": ok,
            "errors": dict(self.errors),
            "wall_seconds": round(self.wall_seconds, 4),
            "throughput_rps": round(ok / self.wall_seconds, 2) if self.wall_seconds > 0 else 0.0,
        }
        row["throughput_samples_per_s"] = round(row["throughput_rps"] * self.batch_size, 2)
        if ok:
            p50, p90, p99 = np.percentile(lat, [50, 90, 99])
            row.update(
                p50_ms=round(float(p50), 4), p90_ms=round(float(p90), 4), p99_ms=round(float(p99), 4),
                mean_ms=round(float(lat.mean()), 4), std_ms=round(float(lat.std()), 4),
                min_ms=round(float(lat.min()), 4), max_ms=round(float(lat.max()), 4),
            )
        return row


def _client(address: str, payloads: list[bytes], warmup: int, requests: int, barrier, results) -> None:
    """One client process: warm up, wait for the others, then send requests one after another."""
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(PREDICT)  # bytes in, bytes out: no (de)serialization on the client
    latencies = np.zeros(requests, dtype=np.int64)
    errors: dict[str, int] = {}
    ok = 0
    try:
        for i in range(warmup):
            try:
                call(payloads[i % len(payloads)], timeout=60)
            except grpc.RpcError:
                pass
        barrier.wait(timeout=START_TIMEOUT)
        start = time.time_ns()
        for i in range(requests):
            payload = payloads[i % len(payloads)]
            t0 = time.perf_counter_ns()
            try:
                call(payload, timeout=60)
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() else "UNKNOWN"
                errors[code] = errors.get(code, 0) + 1
                continue
            latencies[ok] = time.perf_counter_ns() - t0
            ok += 1
        end = time.time_ns()
    finally:
        channel.close()
    results.put((latencies[:ok], errors, start, end))


def predict_payloads(model_name: str, input_name: str, x: np.ndarray, batch_size: int, n: int = N_PAYLOADS) -> list[bytes]:
    """Serialized PredictRequests of ``batch_size`` consecutive samples each, cycling through ``x``."""
    from tensorflow_serving.apis import predict_pb2

    from fpgaflow.inference.tensors import from_array

    payloads = []
    for i in range(n):
        rows = np.take(x, np.arange(i * batch_size, (i + 1) * batch_size), axis=0, mode="wrap")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.inputs[input_name].CopyFrom(from_array(rows))
        payloads.append(request.SerializeToString())
    return payloads


def run_load(target: str, address: str, payloads: list[bytes], batch_size: int, concurrency: int, requests: int, warmup: int) -> RunResult:
    """``concurrency`` client processes against one server; returns every successful request's latency."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(concurrency)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(address, payloads, warmup, requests, barrier, results), daemon=True)
        for _ in range(concurrency)
    ]
    for p in procs:
        p.start()
    try:
        collected = [results.get(timeout=START_TIMEOUT + requests * 60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    latencies = np.concatenate([c[0] for c in collected]) / 1e6
    errors: dict[str, int] = {}
    for _, errs, _, _ in collected:
        for code, n in errs.items():
            errors[code] = errors.get(code, 0) + n
    wall = (max(c[3] for c in collected) - min(c[2] for c in collected)) / 1e9
    return RunResult(target, concurrency, batch_size, latencies, errors, wall)


def served_accuracy(address: str, model_name: str, input_name: str, output_name: str, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    """Accuracy of the endpoint's answers on labelled samples, asked with the stock TF Serving client."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from fpgaflow.inference.tensors import from_array, to_array

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        predicted = []
        for i in range(0, len(x), batch):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.inputs[input_name].CopyFrom(from_array(x[i : i + batch]))
            response = stub.Predict(request, timeout=120)
            predicted.append(to_array(response.outputs[output_name], output_name).argmax(axis=1))
    return float((np.concatenate(predicted) == y).mean())


def write_csv(rows: list[dict], path: Path) -> None:
    columns = ["target", "concurrency", "batch_size", "requests", "ok", "p50_ms", "p90_ms", "p99_ms",
               "mean_ms", "std_ms", "throughput_rps", "throughput_samples_per_s", "wall_seconds"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*columns, "errors"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "errors": ";".join(f"{k}={v}" for k, v in row["errors"].items())})
