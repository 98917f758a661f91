"""Data sets by name, split deterministically from the spec's seed.

- ``jets``: the hls4ml jet data set from ``path`` (ARFF, CSV, .npy, .npz, HDF5: see ``fpgaflow_trainer.readers``),
  or without a path the synthetic generator (labelled synthetic everywhere).
- ``digits``: scikit-learn's bundled 8x8 digits.
- ``mnist``/``fashion-mnist``: the idx(.gz) files in the folder ``path``. These keep the files' own split
  (train-* for training, t10k-* for test) so results compare with the literature; ``testFraction`` does not
  apply to them. ``maxSamples`` then takes from each part in proportion to its size.

Every other split is stratified with ``testFraction`` from ``seed``; ``maxSamples`` draws a random subset from
``seed`` before splitting. Training sets are in a random order (Keras' validation split takes their end).
Images keep their shape: ``x`` is (n, *shape) with ``shape`` (rows, cols, 1); ``features`` names the flattened
values (``pixel_<row>_<col>``), the order the scaler uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from fpgaflow.spec import DatasetSpec
from fpgaflow_trainer import jets, readers

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
OWN_SPLIT = "the files' own: train-* for training, t10k-* for test (testFraction does not apply)"


@dataclass(frozen=True)
class Dataset:
    name: str
    features: tuple[str, ...]  # names of the flattened per-sample values
    classes: tuple[str, ...]
    synthetic: bool
    x_train: np.ndarray  # (n, *shape), raw (unscaled)
    y_train: np.ndarray  # (n,) int64 indices into classes
    x_test: np.ndarray
    y_test: np.ndarray
    shape: tuple[int, ...] | None = None  # per-sample shape: (16,) jets, (8, 8, 1) digits; x_train.shape[1:] if None
    path: str | None = None  # the file or folder read, None for generated or bundled data
    format: str = ""  # synthetic, sklearn, arff, csv, npy, npz, hdf5, idx
    split: str = ""  # how train and test were separated

    def __post_init__(self):
        if self.shape is None:
            object.__setattr__(self, "shape", tuple(self.x_train.shape[1:]))

    def describe(self) -> dict:
        if self.synthetic:
            source = "synthetic generator (fpgaflow_trainer.jets), not the real data"
        elif self.path is not None:
            source = f"{self.path} ({self.format})"
        else:
            source = self.name
        return {
            "name": self.name,
            "synthetic": self.synthetic,
            "source": source,
            "path": self.path,
            "format": self.format,
            "shape": list(self.shape),
            "split": self.split,
            "features": list(self.features),
            "classes": list(self.classes),
            "train": len(self.x_train),
            "test": len(self.x_test),
        }


def pixel_names(rows: int, cols: int) -> tuple[str, ...]:
    return tuple(f"pixel_{r}_{c}" for r in range(rows) for c in range(cols))


def subset(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a random subset of ``range(n)`` of at most ``max_samples``, deterministic in the seed."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Stratified (x_train, x_test, y_train, y_test), deterministic in the seed; the training part is shuffled."""
    return tuple(train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32)[..., None], bunch.target.astype(np.int64)


def _jets(spec: DatasetSpec) -> Dataset:
    if spec.path is None:
        x, y = jets.synthetic_jets(spec.samples, spec.seed)
        path, fmt, synthetic = None, "synthetic", True
    else:
        x, y, fmt = readers.read_jets(spec.path)
        path, synthetic = spec.path, False
    keep = subset(len(x), spec.max_samples, spec.seed)
    x_train, x_test, y_train, y_test = split(x[keep], y[keep], spec.test_fraction, spec.seed)
    how = f"stratified, testFraction {spec.test_fraction}, seed {spec.seed}"
    return Dataset(spec.name, tuple(jets.FEATURES), tuple(jets.CLASSES), synthetic, x_train, y_train, x_test, y_test,
                   shape=(len(jets.FEATURES),), path=path, format=fmt, split=how)


def _mnist(spec: DatasetSpec) -> Dataset:
    x_train, y_train, x_test, y_test = readers.read_mnist(spec.path)
    classes = FASHION_MNIST_CLASSES if spec.name == "fashion-mnist" else MNIST_CLASSES
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if top >= len(classes):
        raise readers.DataFileError(f"{spec.path}: label {top} is outside the {len(classes)} classes of {spec.name}")
    n_train, n_test = len(x_train), len(x_test)
    if spec.max_samples is not None and spec.max_samples < n_train + n_test:
        n_train = round(spec.max_samples * n_train / (n_train + n_test))
        n_test = spec.max_samples - n_train
    rng = np.random.default_rng(spec.seed)
    train = rng.permutation(len(x_train))[:n_train]  # a random order: Keras' validation split takes the end
    test = np.sort(rng.permutation(len(x_test))[:n_test])
    rows, cols = x_train.shape[1:]
    return Dataset(spec.name, pixel_names(rows, cols), classes, False,
                   x_train[train, :, :, None].astype(np.float32), y_train[train],
                   x_test[test, :, :, None].astype(np.float32), y_test[test],
                   shape=(rows, cols, 1), path=spec.path, format="idx", split=OWN_SPLIT)


def load_dataset(spec: DatasetSpec) -> Dataset:
    """The data set of the spec, split into train and test; raw values, images as (n, rows, cols, 1)."""
    if spec.name == "jets":
        return _jets(spec)
    if spec.name in ("mnist", "fashion-mnist"):
        return _mnist(spec)
    if spec.name == "digits":
        x, y = _digits()
        keep = subset(len(x), spec.max_samples, spec.seed)
        x_train, x_test, y_train, y_test = split(x[keep], y[keep], spec.test_fraction, spec.seed)
        return Dataset(spec.name, pixel_names(8, 8), tuple(str(d) for d in range(10)), False,
                       x_train, y_train, x_test, y_test, shape=(8, 8, 1), format="sklearn",
                       split=f"stratified, testFraction {spec.test_fraction}, seed {spec.seed}")
    raise ValueError(f"unknown dataset {spec.name!r}")  # the spec's Literal makes this unreachable
