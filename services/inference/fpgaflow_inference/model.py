"""The served model: the raw-feature contract around a back end (validation, scaling), its batching,
its device pacing and its accounting (Prometheus metrics, and the per-model statistics of stats.py)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fpgaflow.errors import RequestError
from fpgaflow.preprocess import Scaler
from fpgaflow.trial import INPUT_NAME, OUTPUT_NAME
from fpgaflow_inference.backends import Backend
from fpgaflow_inference.batching import Batch, Batcher, BatchPolicy
from fpgaflow_inference.metrics import ServerMetrics
from fpgaflow_inference.pacing import DevicePacer
from fpgaflow_inference.stats import ModelStats

MAX_BATCH = 65536


def validate(x: np.ndarray, shape: tuple[int, ...], name: str = INPUT_NAME) -> np.ndarray:
    """The request's samples as [batch, *shape] (one sample of ``shape`` alone is a batch of one), or a
    RequestError naming what is wrong. ``shape``: a sample's, (features,) or an image's (rows, cols, channels)."""
    if x.shape == shape:
        x = x.reshape(1, *shape)
    if x.shape[1:] != shape:
        wanted = ", ".join(map(str, ("batch", *shape)))
        raise RequestError(f"input {name!r} must have shape [{wanted}], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise RequestError(f"input {name!r} is empty (shape {list(x.shape)})")
    if x.shape[0] > MAX_BATCH:
        raise RequestError(f"input {name!r} has {x.shape[0]} samples, more than {MAX_BATCH}")
    if not np.isfinite(x).all():
        sample, *where = np.argwhere(~np.isfinite(x))[0]
        at = f"feature {where[0]}" if len(where) == 1 else f"position {tuple(int(i) for i in where)}"
        raise RequestError(f"input {name!r} contains NaN or Inf (first at sample {sample}, {at})")
    return x


@dataclass
class ServedModel:
    name: str
    version: int
    scaler: Scaler
    classes: tuple[str, ...]
    backend: Backend
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    pacer: DevicePacer | None = None
    metrics: ServerMetrics | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    extra: dict = field(default_factory=dict)
    stats: ModelStats = field(default_factory=ModelStats, init=False)

    def __post_init__(self):
        self._executor = ThreadPoolExecutor(max_workers=self.policy.concurrent_batches, thread_name_prefix="compute")
        self._batcher = Batcher(self.backend.predict, self.policy, self._executor, self._observe)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """A sample's shape: (features,), or an image model's (rows, cols, channels)."""
        return self.scaler.sample_shape

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def start(self) -> None:
        """Begin serving on the running event loop."""
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()
        self._executor.shutdown(wait=True)

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """Validated and scaled: what the back end takes."""
        return self.scaler.apply(validate(raw, self.input_shape, self.input_name)).astype(np.float32, copy=False)

    async def predict(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities for raw samples, computed in a batch with other requests when batching is on."""
        arrived = time.perf_counter()
        try:
            x = self.prepare(raw)
            prepared = time.perf_counter()
            y, batch = await self._batcher.submit(x)
            if batch.device_done is not None:  # answered when the one modelled device would have its output
                wait = batch.device_done - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.metrics is not None:
                    self.metrics.observe_pacing(max(wait, 0.0))
        except Exception:
            self.stats.failed(time.perf_counter() - arrived)
            raise
        done = time.perf_counter()
        computed = batch.started + batch.compute_seconds
        self.stats.answered(len(x), done - arrived, queue=batch.started - prepared, compute_input=prepared - arrived,
                            compute_infer=batch.compute_seconds, compute_output=done - computed)
        return y

    def _observe(self, batch: Batch) -> None:
        """Once per back-end call, on the event loop: book the modelled device, record the metrics."""
        self.stats.executed()
        if self.pacer is not None:
            batch.device_done = self.pacer.reserve(batch.started, batch.samples)
        if self.metrics is not None:
            self.metrics.observe_batch(batch.samples, batch.queue_seconds, batch.compute_seconds,
                                       self.backend.device_seconds(batch.samples))

    def facts(self) -> dict:
        """What the server states about how it serves (model metadata, server info)."""
        facts = {"target": self.backend.target, "backend": self.backend.description,
                 "batching": {"maxBatchSize": self.policy.max_batch_size, "maxLatencyMicros": round(self.policy.max_delay_s * 1e6)}
                 if self.policy.enabled else "off",
                 "pacing": "off", **self.extra}
        if getattr(self.backend, "emulation", None):
            facts["emulation"] = self.backend.emulation
        timing = getattr(self.backend, "timing", None)
        if timing:
            facts["device_timing"] = {k: timing[k] for k in ("latency_ns", "ii_ns", "clock_period_ns") if k in timing}
        if self.pacer is not None:
            facts["pacing"] = (f"on: answers wait for one modelled device (latency {self.pacer.latency_s * 1e9:g} ns, "
                               f"a sample every {self.pacer.ii_s * 1e9:g} ns)")
        return facts
