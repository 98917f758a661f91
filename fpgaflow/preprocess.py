"""The feature scaler fitted by the trainer and applied by every later stage and by the servers,
so that a served model takes raw features."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Scaler:
    """Standardization per input value, and the shape of the samples the served model takes: ``shape`` (rows,
    columns, channels of an image model, say), or flat rows of the features where it is None."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    shape: tuple[int, ...] | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape if self.shape is not None else (len(self.features),)

    @classmethod
    def fit(cls, x: np.ndarray, features: list[str] | tuple[str, ...]) -> Scaler:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        std = x.std(axis=0)
        return cls(tuple(features), x.mean(axis=0), np.where(std > 0, std, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize raw features; float32 out, the type every back end is fed."""
        shape = np.shape(x)
        flat = np.asarray(x, dtype=np.float64).reshape(shape[0], -1)
        return ((flat - self.mean) / self.scale).astype(np.float32).reshape(shape)

    def save(self, path: Path) -> None:
        doc = {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist()}
        if self.shape is not None:
            doc["shape"] = list(self.shape)
        path.write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: Path) -> Scaler:
        doc = json.loads(Path(path).read_text())
        shape = tuple(int(d) for d in doc["shape"]) if "shape" in doc else None
        return cls(tuple(doc["features"]), np.asarray(doc["mean"]), np.asarray(doc["scale"]), shape)
