"""Data sets by name, split deterministically from the spec's seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from fpgaflow.spec import DatasetSpec
from fpgaflow.trainer import jets


@dataclass(frozen=True)
class Dataset:
    name: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    synthetic: bool
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def describe(self) -> dict:
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "source": "synthetic generator (fpgaflow.trainer.jets), not the real data" if self.synthetic else self.name,
            "features": list(self.features),
            "classes": list(self.classes),
            "train": len(self.x_train),
            "test": len(self.x_test),
        }


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    features = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), features, tuple(str(d) for d in range(10))


def load_dataset(spec: DatasetSpec) -> Dataset:
    if spec.name == "jets":
        x, y = jets.synthetic_jets(spec.samples, spec.seed)
        features, classes, synthetic = tuple(jets.FEATURES), tuple(jets.CLASSES), True
    elif spec.name == "digits":
        x, y, features, classes = _digits()
        synthetic = False
    else:  # the spec's Literal makes this unreachable; kept as a clear failure for new names
        raise ValueError(f"unknown dataset {spec.name!r}")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=spec.test_fraction, random_state=spec.seed, stratify=y
    )
    return Dataset(spec.name, features, classes, synthetic, x_train, y_train, x_test, y_test)
