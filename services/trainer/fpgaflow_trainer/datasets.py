"""Data sets by name, split deterministically from the spec's seed.

- ``jets``: the hls4ml jet data set from ``path`` (ARFF, CSV, .npy, .npz, HDF5: see ``fpgaflow_trainer.readers``),
  or without a path jets simulated with Pythia 8 and FastJet (``fpgaflow_trainer.simulation``), made once into
  the data-set cache and read from it afterwards.
- ``jet-images``: top versus QCD jet images, simulated likewise (the top-tagging data set's recipe).
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

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fpgaflow.spec import DatasetSpec
from fpgaflow_trainer import jets, readers
from fpgaflow_trainer.preconditions import human_seconds

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
    x_train: np.ndarray  # (n, *shape), raw (unscaled)
    y_train: np.ndarray  # (n,) int64 indices into classes
    x_test: np.ndarray
    y_test: np.ndarray
    shape: tuple[int, ...] | None = None  # per-sample shape: (16,) jets, (8, 8, 1) digits; x_train.shape[1:] if None
    path: str | None = None  # the file or folder read, None for generated or bundled data
    format: str = ""  # simulated, sklearn, arff, csv, npy, npz, hdf5, idx
    split: str = ""  # how train and test were separated
    simulation: dict | None = None  # the simulated set's record: generator, classes, seed, pT window, cache

    def __post_init__(self):
        if self.shape is None:
            object.__setattr__(self, "shape", tuple(self.x_train.shape[1:]))

    def describe(self) -> dict:
        if self.simulation is not None:
            source = self.simulation["description"]
        elif self.path is not None:
            source = f"{self.path} ({self.format})"
        else:
            source = self.name
        return {
            "name": self.name,
            "simulated": self.simulation is not None,
            "source": source,
            "simulation": self.simulation,
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


Progress = Callable[[int, int], None]  # (jets made, jets to make)
JET_IMAGE_CLASSES = ("qcd", "t")  # background first: label 1 is the top (the top-tagging set's is_signal)


def cache_folder(home: Path | None = None) -> Path:
    """Where simulated sets are kept: ``$FPGAFLOW_DATASETS``, else ``datasets/`` in the run store ``home``
    (beside ``experiments/``; in a cluster on the artifacts volume, shared by every trial), else
    ``~/.cache/fpgaflow/datasets``."""
    if os.environ.get("FPGAFLOW_DATASETS"):
        return Path(os.environ["FPGAFLOW_DATASETS"])
    if home is not None:
        return Path(home) / "datasets"
    return Path.home() / ".cache" / "fpgaflow" / "datasets"


def simulation_recipe(spec: DatasetSpec):
    """What shapes the simulated set of ``spec`` (jets: the five classes; jet-images: QCD and top)."""
    from fpgaflow_trainer.simulation.sets import Recipe, class_counts

    classes = jets.CLASSES if spec.name == "jets" else JET_IMAGE_CLASSES
    return Recipe(class_counts(classes, spec.samples), spec.simulation.seed, spec.pt_range)


def needed_bytes(spec: DatasetSpec, cache: Path) -> int:
    """What the data set of ``spec`` still needs on the cache's disk (0 where nothing is to be simulated)."""
    if not spec.simulated:
        return 0
    from fpgaflow_trainer.simulation.sets import missing_bytes

    return missing_bytes(simulation_recipe(spec), cache)


def progress_printer(label: str, every: float = 5.0) -> Progress:
    """A progress callback printing a line at most every ``every`` seconds, and the last one:
    ``data: simulating jets 1,250/20,000 (6%), 104 jets/s, 2m58s left``."""
    started, last = time.monotonic(), [-every]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < every and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        left = f", {human_seconds((total - done) / rate)} left" if done and done < total else ""
        print(f"data: simulating {label} {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)"
              + (f", {rate:.0f} jets/s{left}" if done else ""), flush=True)

    return show


def _simulate(spec: DatasetSpec, cache: Path, progress: Progress | None):
    """The simulated set of ``spec`` and its record (what it is, how it was made, where it is kept)."""
    from fpgaflow_trainer.simulation.sets import load_or_simulate

    recipe = simulation_recipe(spec)
    made = load_or_simulate(recipe, cache, progress=progress, constituents=spec.name == "jet-images")
    return made, {"description": recipe.description(), **recipe.record(), **made.record()}


def _jets(spec: DatasetSpec, cache: Path, progress: Progress | None) -> Dataset:
    simulation = None
    if spec.path is None:
        made, simulation = _simulate(spec, cache, progress)
        x, y, path, fmt = made.features, made.labels, None, "simulated"
    else:
        x, y, fmt = readers.read_jets(spec.path)
        path = spec.path
    keep = subset(len(x), spec.max_samples, spec.seed)
    x_train, x_test, y_train, y_test = split(x[keep], y[keep], spec.test_fraction, spec.seed)
    how = f"stratified, testFraction {spec.test_fraction}, seed {spec.seed}"
    return Dataset(spec.name, tuple(jets.FEATURES), tuple(jets.CLASSES), x_train, y_train, x_test, y_test,
                   shape=(len(jets.FEATURES),), path=path, format=fmt, split=how, simulation=simulation)


def _jet_images(spec: DatasetSpec, cache: Path, progress: Progress | None) -> Dataset:
    from fpgaflow_trainer.simulation.images import jet_images

    made, simulation = _simulate(spec, cache, progress)
    size = spec.image_size
    x = jet_images(made.constituents, size=size, rotate=spec.align_images, flip=spec.align_images)[..., None]
    simulation = {**simulation, "images": f"{size}x{size} pixels of pT / the jet's pT in (rapidity, azimuth), "
                  f"0.8 either side of the jet's centre" + (", rotated and flipped by the principal axis" if spec.align_images else ""),
                  "constituents": "px, py, pz, E of every jet's particles, in the cache's chunks (data.npz)"}
    keep = subset(len(x), spec.max_samples, spec.seed)
    x_train, x_test, y_train, y_test = split(x[keep], made.labels[keep], spec.test_fraction, spec.seed)
    return Dataset(spec.name, pixel_names(size, size), JET_IMAGE_CLASSES, x_train, y_train, x_test, y_test,
                   shape=(size, size, 1), format="simulated", simulation=simulation,
                   split=f"stratified, testFraction {spec.test_fraction}, seed {spec.seed}")


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
    return Dataset(spec.name, pixel_names(rows, cols), classes,
                   x_train[train, :, :, None].astype(np.float32), y_train[train],
                   x_test[test, :, :, None].astype(np.float32), y_test[test],
                   shape=(rows, cols, 1), path=spec.path, format="idx", split=OWN_SPLIT)


def load_dataset(spec: DatasetSpec, cache: Path | None = None, progress: Progress | None = None) -> Dataset:
    """The data set of the spec, split into train and test; raw values, images as (n, rows, cols, 1). Simulated
    sets are read from (or made into) the cache folder ``cache`` (default :func:`cache_folder`), with
    ``progress(jets made, jets to make)`` while making."""
    cache = cache or cache_folder()
    if spec.name == "jets":
        return _jets(spec, cache, progress)
    if spec.name == "jet-images":
        return _jet_images(spec, cache, progress)
    if spec.name in ("mnist", "fashion-mnist"):
        return _mnist(spec)
    if spec.name == "digits":
        x, y = _digits()
        keep = subset(len(x), spec.max_samples, spec.seed)
        x_train, x_test, y_train, y_test = split(x[keep], y[keep], spec.test_fraction, spec.seed)
        return Dataset(spec.name, pixel_names(8, 8), tuple(str(d) for d in range(10)),
                       x_train, y_train, x_test, y_test, shape=(8, 8, 1), format="sklearn",
                       split=f"stratified, testFraction {spec.test_fraction}, seed {spec.seed}")
    raise ValueError(f"unknown dataset {spec.name!r}")  # the spec's Literal makes this unreachable
