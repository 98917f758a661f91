"""Diagnostics that stop a training run early: NaN/Inf, divergence, dead ReLUs.

Each check is a small pure function returning a message or None; the Keras callback runs them and
stops training at the first finding. The run then keeps its last good checkpoint (the epoch that
failed is not saved) and the train stage fails with reason ``Diverged``, the message and the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

DIVERGENCE_FACTOR = 10.0  # validation loss this many times its best so far
DEAD_RELU_FRACTION = 0.9  # of a ReLU layer's units silent on every probe sample


@dataclass(frozen=True)
class Diagnosis:
    epoch: int
    message: str


def check_loss(loss: float | None) -> str | None:
    if loss is not None and not math.isfinite(loss):
        return f"the training loss became {loss}"
    return None


def check_weights(model: keras.Model) -> str | None:
    bad = [w.path for w in model.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    return f"non-finite weights in {', '.join(bad)}" if bad else None


def check_divergence(val_losses: list[float], factor: float = DIVERGENCE_FACTOR) -> str | None:
    if len(val_losses) < 2:
        return None
    best, last = min(val_losses[:-1]), val_losses[-1]
    if last > factor * best:
        return f"the validation loss diverged: {last:.4g}, more than {factor:g} times its best {best:.4g}"
    return None


def dead_units(activations: np.ndarray) -> float:
    """Fraction of units (columns) that are zero for every sample (row)."""
    flat = activations.reshape(len(activations), -1)
    return float((flat <= 0).all(axis=0).mean())


def relu_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers
            if getattr(getattr(layer, "activation", None), "__name__", "") == "relu" or isinstance(layer, keras.layers.ReLU)]


def check_dead_relus(model: keras.Model, probe: np.ndarray, limit: float = DEAD_RELU_FRACTION) -> str | None:
    layers = relu_layers(model)
    if not layers or len(probe) == 0:
        return None
    outputs = keras.Model(model.input, [layer.output for layer in layers])(probe, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for layer, values in zip(layers, outputs, strict=True):
        fraction = dead_units(keras.ops.convert_to_numpy(values))
        if fraction >= limit:
            return f"{fraction:.0%} of the units of {layer.name} output 0 for every probe sample (dead ReLUs)"
    return None


class Diagnostics(keras.callbacks.Callback):
    """Runs the checks during training; ``diagnosis`` says why it stopped, when it did."""

    def __init__(self, probe: np.ndarray, val_losses: list[float] | None = None):
        super().__init__()
        self.probe = probe
        self.diagnosis: Diagnosis | None = None
        self._val_losses: list[float] = list(val_losses or [])  # of the epochs before a resume
        self._epoch = 0

    def _stop(self, message: str) -> None:
        self.diagnosis = Diagnosis(self._epoch + 1, message)
        self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.diagnosis is None and (message := check_loss(float((logs or {}).get("loss", 0.0)))):
            self._stop(message)

    def on_epoch_end(self, epoch, logs=None):
        if self.diagnosis is not None:
            return
        logs = logs or {}
        if "val_loss" in logs:
            self._val_losses.append(float(logs["val_loss"]))
        for message in (check_loss(float(logs.get("loss", 0.0))), check_loss(logs.get("val_loss")),
                        check_weights(self.model), check_divergence(self._val_losses),
                        check_dead_relus(self.model, self.probe)):
            if message:
                self._stop(message)
                return
