"""Diagnostics that stop a training run early: NaN/Inf, divergence, dead ReLUs, a plateau, exploding gradients.

Each check is a small pure function returning a message or None; the Keras callback runs them and
stops training at the first finding. The run then keeps its last good checkpoint (the epoch that
failed is not saved) and the train stage fails with reason ``Diverged``, the message and the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from fpgaflow.spec import DiagnosticsSpec

DEFAULTS = DiagnosticsSpec()


@dataclass(frozen=True)
class Diagnosis:
    epoch: int
    message: str


def check_loss(loss: float | None) -> str | None:
    if loss is not None and not math.isfinite(loss):
        return f"the training loss became {loss}"
    return None


def check_weights(model: keras.Model) -> str | None:
    bad = [w.path for w in model.trainable_weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    return f"non-finite weights in {', '.join(bad)}" if bad else None


def check_divergence(val_losses: list[float], factor: float = DEFAULTS.divergence_factor) -> str | None:
    if len(val_losses) < 2:
        return None
    best, last = min(val_losses[:-1]), val_losses[-1]
    if last > factor * best:
        return f"the validation loss diverged: {last:.4g}, more than {factor:g} times its best {best:.4g}"
    return None


def check_plateau(losses: list[float], epochs: int = DEFAULTS.plateau_epochs,
                  tolerance: float = DEFAULTS.plateau_tolerance) -> str | None:
    """The training loss of the last ``epochs`` epochs never beat the best before them by ``tolerance`` (relative)."""
    if epochs <= 0 or len(losses) <= epochs:
        return None
    before, recent = min(losses[:-epochs]), min(losses[-epochs:])
    if recent > before - tolerance * abs(before):
        return (f"the training loss reached a plateau: its best of the last {epochs} epochs, {recent:.6g}, "
                f"is no better than {before:.6g} before them")
    return None


def check_gradient(norm: float | None, limit: float = DEFAULTS.max_gradient_norm) -> str | None:
    if norm is not None and (not math.isfinite(norm) or norm > limit):
        return f"the gradients exploded: global norm {norm:.4g} on the probe batch, above the limit {limit:g}"
    return None


def check_dead_relus(fractions: dict[str, float] | None, limit: float = DEFAULTS.dead_relu_fraction) -> str | None:
    """``fractions``: each ReLU layer's fraction of units silent on every probe sample (the history row's)."""
    for layer, fraction in (fractions or {}).items():
        if fraction >= limit:
            return f"{fraction:.0%} of the units of {layer} output 0 for every probe sample (dead ReLUs)"
    return None


class Diagnostics(keras.callbacks.Callback):
    """Runs the checks during training; ``diagnosis`` says why it stopped, when it did.

    ``history`` is the history recorder's list of rows (earlier in the callback list, so the row of
    the epoch just ended is there, with its gradient norm and dead units); rows before a resume count.
    """

    def __init__(self, history: list[dict], spec: DiagnosticsSpec = DEFAULTS):
        super().__init__()
        self.history, self.spec = history, spec
        self.diagnosis: Diagnosis | None = None
        self._epoch = 0

    def _stop(self, message: str) -> None:
        self.diagnosis = Diagnosis(self._epoch + 1, message)
        self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _findings(self, logs: dict):
        """The checks in order of cost, lazily: the first finding stops the epoch's checking."""
        spec, rows = self.spec, self.history
        last = rows[-1] if rows else {}
        yield check_loss(float(logs.get("loss", 0.0)))
        yield check_loss(logs.get("val_loss"))
        yield check_weights(self.model)
        yield check_gradient(last.get("gradient_norm"), spec.max_gradient_norm)
        yield check_divergence([r["val_loss"] for r in rows if "val_loss" in r], spec.divergence_factor)
        yield check_plateau([r["loss"] for r in rows if "loss" in r], spec.plateau_epochs, spec.plateau_tolerance)
        yield check_dead_relus(last.get("dead_relu_fraction"), spec.dead_relu_fraction)

    def on_epoch_end(self, epoch, logs=None):
        if self.diagnosis is not None:
            return
        for message in self._findings(logs or {}):
            if message:
                self._stop(message)
                return
