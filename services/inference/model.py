"""The served model: the raw-feature contract around a back end (validation, scaling, timing)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fpgaflow.errors import RequestError
from fpgaflow.inference.backends import Backend
from fpgaflow.inference.metrics import ServerMetrics
from fpgaflow.preprocess import Scaler
from fpgaflow.trainer.model import INPUT_NAME, OUTPUT_NAME

MAX_BATCH = 65536


@dataclass
class ServedModel:
    name: str
    version: int
    scaler: Scaler
    classes: tuple[str, ...]
    backend: Backend
    metrics: ServerMetrics | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    extra: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.scaler.features)

    def validate(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 1 and x.size == self.n_features:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise RequestError(f"input {self.input_name!r} must have shape [batch, {self.n_features}], got {list(x.shape)}")
        if x.shape[0] == 0:
            raise RequestError(f"input {self.input_name!r} is empty")
        if x.shape[0] > MAX_BATCH:
            raise RequestError(f"input {self.input_name!r} has {x.shape[0]} samples, more than {MAX_BATCH}")
        if not np.isfinite(x).all():
            raise RequestError(f"input {self.input_name!r} contains NaN or Inf")
        return x

    def predict(self, raw: np.ndarray) -> np.ndarray:
        x = self.scaler.apply(self.validate(raw))
        started = time.perf_counter()
        y = self.backend.predict(x)
        if self.metrics is not None:
            self.metrics.observe_compute(len(x), time.perf_counter() - started, self.backend.device_seconds(len(x)))
        return y
