"""Report a training run from any framework into an fpgaflow trial folder, with the standard library only.

A PyTorch, JAX or plain-Python script run as the train stage (``train.command``) writes the same files as
the Keras trainer, so progress, curves, notifications and the run store work alike. This file imports
nothing outside the standard library: a script whose Python lacks fpgaflow can copy it (its path is in
``FPGAFLOW_TRACKING_PY``) and import it as a plain module.

Files in the train stage folder (``FPGAFLOW_TRAIN_DIR``):

    history.json                   {"total_epochs": N, "epochs": [{"epoch": 1, "epoch_seconds": ..., "loss": ...}, ...]}
    outcome.json                   {"status": "Succeeded", "results": {...}} or {"status": "Failed", "reason", "message"}
    checkpoints/epoch-NNNN/        what ``write(path)`` wrote at ``checkpoint``, and state.json (epoch, state, history)
    checkpoints/latest.json        {"epoch": N, "folder": "epoch-NNNN"}: written last, so a kill keeps the previous one

Usage::

    from fpgaflow import tracking

    run = tracking.Run()                       # FPGAFLOW_TRAIN_DIR; total epochs from the spec's train.epochs
    start = 0
    if (ckpt := run.latest_checkpoint()) is not None:   # resume after a kill
        start, path, state = ckpt
        model.load_state_dict(torch.load(path))
    for epoch in range(start + 1, run.total_epochs + 1):
        ...
        run.log_epoch(epoch, loss=loss, accuracy=acc, val_loss=vloss, val_accuracy=vacc, learning_rate=lr)
        run.save_checkpoint(epoch, lambda p: torch.save(model.state_dict(), p), state={"seed": seed})
    run.finish(accuracy=test_accuracy)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

ENV_TRAIN_DIR = "FPGAFLOW_TRAIN_DIR"
ENV_SPEC = "FPGAFLOW_SPEC"
ENV_TRIAL_DIR = "FPGAFLOW_TRIAL_DIR"
ENV_TRACKING_PY = "FPGAFLOW_TRACKING_PY"
HISTORY = "history.json"
OUTCOME = "outcome.json"
CHECKPOINTS = "checkpoints"
POINTER = "latest.json"
CHECKPOINT_FILE = "checkpoint"
TEXT_KEYS = frozenset({"phase"})  # row keys whose value may be a string (e.g. "float", "qat")
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class Checkpoint(NamedTuple):
    epoch: int
    path: Path  # what write(path) wrote: a file or a folder
    state: dict


def write_json(path: Path, data: Any) -> None:
    """Write atomically (a temporary file in the same folder, synced, then os.replace): readers never see
    half a file, a crash never leaves one. Arrays (anything with ``tolist``) and paths are written as lists
    and strings. The one JSON writer of fpgaflow (``fpgaflow.trial`` re-exports it): it lives here because
    this file must stand alone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=_jsonable)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric(value: Any) -> bool:
    """A number, null, or a list/dict of those (per-class or per-layer values)."""
    if value is None or _is_number(value):
        return True
    if isinstance(value, list):
        return all(v is None or _is_number(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and (v is None or _is_number(v)) for k, v in value.items())
    return False


def validate_history(doc: Any) -> list[str]:
    """Problems of a history.json document, each naming where it is; empty when the document is valid."""
    if not isinstance(doc, dict):
        return [f"history must be a JSON object, got {type(doc).__name__}"]
    problems = []
    total = doc.get("total_epochs")
    if not (isinstance(total, int) and not isinstance(total, bool) and total >= 1):
        problems.append(f"total_epochs must be an integer >= 1, got {total!r}")
    rows = doc.get("epochs")
    if not isinstance(rows, list):
        return problems + [f"epochs must be a list of rows, got {type(rows).__name__}"]
    for i, row in enumerate(rows):
        where = f"epochs[{i}]"
        if not isinstance(row, dict):
            problems.append(f"{where} must be an object, got {type(row).__name__}")
            continue
        epoch = row.get("epoch")
        if epoch != i + 1 or isinstance(epoch, bool):
            problems.append(f"{where}.epoch must be {i + 1} (epochs count 1, 2, ... without gaps), got {epoch!r}")
        if "loss" not in row:
            problems.append(f"{where} has no loss")
        seconds = row.get("epoch_seconds")
        if seconds is not None and not (_is_number(seconds) and seconds >= 0):
            problems.append(f"{where}.epoch_seconds must be a number >= 0, got {seconds!r}")
        for key, value in row.items():
            if key in TEXT_KEYS and isinstance(value, str):
                continue
            if not _numeric(value):
                problems.append(f"{where}.{key} must be a number, got {type(value).__name__} {value!r}")
    return problems


def _check_metrics(epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in TEXT_KEYS and isinstance(value, str):
            row[key] = value
            continue
        if hasattr(value, "item") and callable(value.item):  # a 0-d numpy/torch/jax value
            value = value.item()
        if not _is_number(value):
            raise ValueError(f"epoch {epoch}: metric {key} must be a number, got {type(value).__name__} {value!r}")
        value = float(value) if isinstance(value, float) else value
        if isinstance(value, float) and not math.isfinite(value):
            print(f"tracking: epoch {epoch}: {key} is {value}", file=sys.stderr, flush=True)
        row[key] = value
    return row


class Run:
    """One training run reporting into a train stage folder."""

    def __init__(self, out_dir: str | Path | None = None, total_epochs: int | None = None):
        if out_dir is None:
            out_dir = os.environ.get(ENV_TRAIN_DIR)
            if not out_dir:
                raise RuntimeError(f"no out_dir given and {ENV_TRAIN_DIR} is not set: where should the run report?")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._spec: dict | None = None
        if total_epochs is None:
            total_epochs = (self.spec.get("train") or {}).get("epochs")
            if total_epochs is None:
                raise RuntimeError(f"total_epochs not given and no train.epochs in the spec ({ENV_SPEC})")
        if not (isinstance(total_epochs, int) and not isinstance(total_epochs, bool) and total_epochs >= 1):
            raise ValueError(f"total_epochs must be an integer >= 1, got {total_epochs!r}")
        self.total_epochs = total_epochs
        self.epochs: list[dict] = []  # rows logged (or restored from a checkpoint)
        self._mark = time.perf_counter()

    @property
    def spec(self) -> dict:
        """The experiment spec (camelCase, as in the trial's spec.json) from ``FPGAFLOW_SPEC``; {} without it."""
        if self._spec is None:
            path = os.environ.get(ENV_SPEC)
            doc = json.loads(Path(path).read_text()) if path else {}
            self._spec = doc.get("spec", doc) if isinstance(doc, dict) else {}
        return self._spec

    @property
    def history_path(self) -> Path:
        return self.out_dir / HISTORY

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINTS

    def log_epoch(self, epoch: int, **metrics: Any) -> dict:
        """Record one finished epoch's numbers and rewrite history.json; returns the row.

        Epochs count 1, 2, ... without gaps. ``epoch_seconds`` is the time since the previous epoch was
        logged (or the run started or resumed) unless given.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError(f"epoch must be an integer, got {epoch!r}")
        expected = len(self.epochs) + 1
        if epoch != expected:
            raise ValueError(f"epoch {epoch} logged after epoch {expected - 1}: epochs must count up by one")
        if "epoch" in metrics:
            raise ValueError("pass the epoch as the first argument, not as a metric")
        now = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "epoch_seconds": round(now - self._mark, 3)}
        row.update(_check_metrics(epoch, metrics))
        self._mark = now
        self.epochs.append(row)
        self._write_history()
        return row

    def _write_history(self) -> None:
        write_json(self.history_path, {"total_epochs": self.total_epochs, "epochs": self.epochs})

    def save_checkpoint(self, epoch: int, write: Callable[[Path], Any] | bytes, state: dict | None = None) -> Path:
        """Save the checkpoint of a logged epoch; it counts once latest.json names it. Returns its path.

        ``write`` is bytes or a callable that writes a file or a folder at the path it is given. ``state``
        is JSON (optimizer step, RNG seeds, ...) handed back by :meth:`latest_checkpoint`.
        """
        if not self.epochs or self.epochs[-1]["epoch"] != epoch:
            last = self.epochs[-1]["epoch"] if self.epochs else None
            raise ValueError(f"save_checkpoint({epoch}) must follow log_epoch({epoch}); the last logged epoch is {last}")
        state = dict(state or {})
        json.dumps(state)  # not JSON: fail here, before anything is written
        name = f"epoch-{epoch:04d}"
        target = self.checkpoint_dir / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        path = target / CHECKPOINT_FILE
        if isinstance(write, (bytes, bytearray)):
            path.write_bytes(write)
        else:
            write(path)
            if not path.exists():
                raise ValueError(f"the checkpoint writer did not create {path}")
        write_json(target / "state.json", {"epoch": epoch, "state": state, "history": list(self.epochs)})
        write_json(self.checkpoint_dir / POINTER, {"epoch": epoch, "folder": name})
        for old in self.checkpoint_dir.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def latest_checkpoint(self) -> Checkpoint | None:
        """The last complete checkpoint, or None; the run's history goes back to that epoch."""
        pointer = self.checkpoint_dir / POINTER
        if not pointer.exists():
            return None
        folder = self.checkpoint_dir / json.loads(pointer.read_text())["folder"]
        saved = json.loads((folder / "state.json").read_text())
        self.epochs = list(saved["history"])
        self._write_history()
        self._mark = time.perf_counter()
        return Checkpoint(saved["epoch"], folder / CHECKPOINT_FILE, saved["state"])

    def finish(self, **results: Any) -> dict:
        """Mark the run done with its results (e.g. accuracy on the test set), for the stage result."""
        try:
            json.dumps(results, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"results must be finite JSON values: {exc}") from None
        doc = {"status": "Succeeded", "results": results}
        write_json(self.out_dir / OUTCOME, doc)
        return doc

    def fail(self, reason: str, message: str) -> dict:
        """Mark the run failed; ``reason`` is a CamelCase word (``Diverged`` for a run stopped by a diagnosis)."""
        if not _REASON.match(reason or ""):
            raise ValueError(f"reason must be a CamelCase word like Diverged, got {reason!r}")
        doc = {"status": "Failed", "reason": reason, "message": str(message)}
        write_json(self.out_dir / OUTCOME, doc)
        return doc

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            self.fail("StageFailed", f"{kind.__name__}: {exc}")
