"""Prometheus metrics of an inference server: fpgaflow_<thing>_<unit>, labels model/target/method/code only."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
QUEUE_BUCKETS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5, 1.0, 5.0)
DEVICE_BUCKETS = (5e-8, 1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2, 0.1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
INFERENCE_METHODS = ("Predict", "ModelInfer")  # TF Serving's and Open Inference v2's, as the interceptor names them


class ServerMetrics:
    def __init__(self, model: str, target: str, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.model, self.target = model, target
        r = self.registry
        self.request_seconds = Histogram(
            "fpgaflow_request_duration_seconds", "Time from receiving a request to sending its answer.",
            ["model", "target", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram(
            "fpgaflow_queue_duration_seconds", "Time a request waited, validated, for its batch to start computing.",
            ["model", "target"], buckets=QUEUE_BUCKETS, registry=r)
        self.compute_seconds = Histogram(
            "fpgaflow_compute_duration_seconds", "Time the back end spent computing a batch.",
            ["model", "target"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(
            "fpgaflow_requests", "Requests answered, by gRPC status code.", ["model", "target", "method", "code"], registry=r)
        self.in_flight = Gauge(
            "fpgaflow_requests_in_flight", "Requests being handled now.", ["model", "target"], registry=r)
        self.device_seconds = Histogram(
            "fpgaflow_device_latency_seconds",
            "Modelled time of a batch on the target device (fpga: the converter's timing estimate, "
            "latency + (batch - 1) x II at the clock); absent where the measured compute time is the device time.",
            ["model", "target"], buckets=DEVICE_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "fpgaflow_batch_size", "Samples per back-end call.", ["model", "target"], buckets=BATCH_BUCKETS, registry=r)
        self.pacing = Gauge(
            "fpgaflow_device_pacing", "1 when answers are paced to one modelled device (fpga target, serve.fpgaPacing).",
            ["model", "target"], registry=r)
        self.pacing_seconds = Histogram(
            "fpgaflow_pacing_wait_seconds", "Time an answer was held back, after its computation, for the modelled device.",
            ["model", "target"], buckets=QUEUE_BUCKETS, registry=r)
        self.info = Info("fpgaflow_server", "What this server serves.", ["model", "target"], registry=r)
        # The answered-request series exist from the start at 0, so that rate() over a load shorter than a
        # scrape interval sees its increase from 0 rather than a series that appears already counted.
        for method in INFERENCE_METHODS:
            self.requests.labels(model, target, method, "OK")
            self.request_seconds.labels(model, target, method)
        # Each series looked up once, when first observed: labels() validates and locks on every call, which
        # costs a request more than observing does
        self._series: dict[tuple, Any] = {}

    def _child(self, metric, *labels: str):
        """``metric``'s series of this server's model and target and ``labels``."""
        key = (metric, *labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(self.model, self.target, *labels)
        return child

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        self._child(self.request_seconds, method).observe(seconds)
        self._child(self.requests, method, code).inc()

    def observe_batch(self, batch: int, queue_seconds: list[float], seconds: float, device_seconds: float | None) -> None:
        """One back-end call: its samples, the queue time of each request in it, its compute and device time."""
        queue = self._child(self.queue_seconds)
        for waited in queue_seconds:
            queue.observe(waited)
        self._child(self.compute_seconds).observe(seconds)
        self._child(self.batch_size).observe(batch)
        if device_seconds is not None:
            self._child(self.device_seconds).observe(device_seconds)

    def observe_pacing(self, seconds: float) -> None:
        self._child(self.pacing_seconds).observe(seconds)
