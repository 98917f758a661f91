"""Checkpoints every epoch, so a trainer killed at any moment resumes losing at most one epoch.

Layout under ``train/checkpoints/``:

    <phase>.keras              the model of a training phase (float, qat) with its compile settings and
                               built optimizer, in Keras' own format: written once when the phase starts
    epoch-NNNN/variables.npz   the values of every model and optimizer variable at the end of epoch N
    epoch-NNNN/state.json      epoch, phase, history so far, early-stopping counters, numpy RNG state
    latest.json                {"epoch": N, "folder": "epoch-NNNN"}: written last, atomically

Saving only the variables each epoch costs a few milliseconds where a whole .keras file costs
tens (the trainer's overhead budget is 3 % of a fit). A checkpoint counts only once ``latest.json``
names it, so a kill while one is being written leaves the previous one in force; older folders are
removed after the pointer moves.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from fpgaflow.errors import StageError
from fpgaflow.keras_model import load_model  # float and fixed-point (HGQ2) models alike
from fpgaflow.trial import read_json, write_json

POINTER = "latest.json"


@dataclass
class Checkpoint:
    epoch: int
    model: keras.Model
    state: dict


def latest_epoch(folder: Path) -> int | None:
    """The epoch of the last complete checkpoint, without loading it."""
    pointer = folder / POINTER
    return read_json(pointer)["epoch"] if pointer.exists() else None


def _variables(model: keras.Model) -> list:
    return [*model.variables, *model.optimizer.variables]


def _build_optimizer(model: keras.Model) -> None:
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def latest(folder: Path) -> Checkpoint | None:
    """The last complete checkpoint in ``folder``, or None when there is none."""
    pointer = folder / POINTER
    if not pointer.exists():
        return None
    where = folder / read_json(pointer)["folder"]
    state = read_json(where / "state.json")
    model = load_model(folder / f"{state['phase']}.keras")
    _build_optimizer(model)
    with np.load(where / "variables.npz") as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    variables = _variables(model)
    if len(values) != len(variables):
        raise StageError(f"checkpoint {where} holds {len(values)} variables, its model {len(variables)}: not this model's")
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise StageError(f"checkpoint {where}: {variable.path} has shape {tuple(variable.shape)}, saved {value.shape}")
        variable.assign(value)
    return Checkpoint(state["epoch"], model, state)


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached}


def restore_rng(state: dict) -> None:
    rng = state.get("numpy_rng")
    if rng:
        np.random.set_state((rng["name"], np.array(rng["keys"], dtype=np.uint32), rng["pos"], rng["has_gauss"],
                             rng["cached_gaussian"]))


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint at the end of every epoch; ``history`` is the epoch rows recorded so far."""

    def __init__(self, folder: Path, history: list[dict], early_stopping: keras.callbacks.EarlyStopping | None = None,
                 healthy: Callable[[], bool] = lambda: True, phase: str = "float", extra: dict | None = None):
        super().__init__()
        self.folder, self.history, self.early_stopping, self.healthy = folder, history, early_stopping, healthy
        self.phase = phase  # the trainer sets "qat" before fine-tuning the fixed-point model
        self.extra = dict(extra or {})  # facts the trainer needs back on resume (the float model's accuracy)
        folder.mkdir(parents=True, exist_ok=True)

    def on_train_begin(self, logs=None):
        _build_optimizer(self.model)
        structure = self.folder / f"{self.phase}.keras"
        if not structure.exists():  # a resumed phase has it already; it is the same model
            self.model.save(structure.with_suffix(".partial.keras"))
            structure.with_suffix(".partial.keras").replace(structure)

    def on_epoch_end(self, epoch, logs=None):
        if not self.healthy():  # a diagnosed epoch is not saved: the last good checkpoint stays in force
            return
        name = f"epoch-{epoch + 1:04d}"
        target = self.folder / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        np.savez(target / "variables.npz", *(keras.ops.convert_to_numpy(v) for v in _variables(self.model)))
        state = {"epoch": epoch + 1, "phase": self.phase, "history": list(self.history), "numpy_rng": _rng_state(), **self.extra}
        if self.early_stopping is not None:
            best = self.early_stopping.best
            state["early_stopping"] = {"wait": int(self.early_stopping.wait),
                                       "best": None if best is None or not np.isfinite(best) else float(best)}
        write_json(target / "state.json", state)
        write_json(self.folder / POINTER, {"epoch": epoch + 1, "folder": name})
        for old in self.folder.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that continues its patience count and best value from a checkpoint."""

    def __init__(self, resume: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._resume = resume or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume.get("best") is not None:
            self.best = self._resume["best"]
            self.wait = self._resume.get("wait", 0)
