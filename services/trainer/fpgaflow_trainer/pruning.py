"""Magnitude pruning for Keras 3 (tensorflow-model-optimization does not support it).

The schedule is Zhu and Gupta's (2017) polynomial ramp: sparsity 0 up to ``beginEpoch``, then
``target * (1 - (1 - progress)^3)``, the target from ``endEpoch`` on. At the start of each epoch the
:class:`Pruner` zeroes the smallest-magnitude fraction of every pruned kernel; a mask installed as the
kernel's constraint keeps those weights at zero after every optimizer step, inside Keras' compiled
train step, so pruning costs no Python work per batch.
"""

from __future__ import annotations

import keras
import numpy as np

from fpgaflow.errors import SpecError
from fpgaflow.spec import PruningSpec

PRUNABLE = (keras.layers.Dense, keras.layers.Conv2D)  # HGQ2's QDense and QConv2D are subclasses


def sparsity_at(epoch: float, target: float, begin: int, end: int) -> float:
    """Scheduled sparsity at (0-based, possibly fractional) ``epoch``: 0 before ``begin``, ``target``
    from ``end`` on, a cubic ramp between (Zhu and Gupta 2017)."""
    if epoch < begin:
        return 0.0
    if epoch >= end:
        return float(target)
    progress = (epoch - begin) / (end - begin)
    return float(target * (1.0 - (1.0 - progress) ** 3))


def masks_for(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask of ``weights``' shape that zeroes its round(sparsity * size) smallest-magnitude entries
    (exactly that many, ties broken by position)."""
    weights = np.asarray(weights)
    count = int(round(sparsity * weights.size))
    mask = np.ones(weights.size, dtype=weights.dtype if weights.dtype.kind == "f" else np.float32)
    if count > 0:
        magnitudes = np.abs(weights).ravel()
        smallest = np.argsort(magnitudes, kind="stable")[:count]
        mask[smallest] = 0
    return mask.reshape(weights.shape)


def end_epoch(pruning: PruningSpec, float_epochs: int) -> int:
    """The epoch from which the target sparsity holds: endEpoch, else the last float epoch."""
    if pruning.end_epoch is not None:
        return pruning.end_epoch
    return max(float_epochs - 1, pruning.begin_epoch)


def prunable_layers(model: keras.Model, names: list[str] | None = None) -> list[keras.layers.Layer]:
    """The layers whose kernels are pruned: ``names``, else every Dense and Conv2D layer."""
    if names is None:
        return [layer for layer in model.layers if isinstance(layer, PRUNABLE)]
    known = {layer.name: layer for layer in model.layers}
    missing = [name for name in names if name not in known]
    if missing:
        raise SpecError([("train.pruning.layers", f"the model has no layer {', '.join(map(repr, missing))}; "
                                                  f"its layers are {', '.join(known)}")])
    kernelless = [name for name in names if getattr(known[name], "kernel", None) is None]
    if kernelless:
        raise SpecError([("train.pruning.layers", f"{', '.join(map(repr, kernelless))} has no kernel to prune")])
    return [known[name] for name in names]


class _Masked:
    """A kernel constraint: the original constraint (if any), then the mask."""

    def __init__(self, mask: keras.Variable, constraint=None):
        self.mask, self.constraint = mask, constraint

    def __call__(self, weights):
        if self.constraint is not None:
            weights = self.constraint(weights)
        return weights * self.mask


class Pruner(keras.callbacks.Callback):
    """Prunes the model it is fitted with to ``pruning.targetSparsity`` on the schedule.

    Masks are derived from the current weights at the start of every epoch that prunes, so a resumed
    run (``initial_epoch`` > 0) and the QAT phase (fit the QAT model with the same Pruner, its epochs
    continuing the numbering) carry on from the weights they start with. ``float_epochs`` is
    train.epochs, which places the default endEpoch.
    """

    def __init__(self, pruning: PruningSpec, float_epochs: int):
        super().__init__()
        self.pruning = pruning
        self.begin, self.end = pruning.begin_epoch, end_epoch(pruning, float_epochs)
        self.scheduled = 0.0
        self._masks: list[tuple[keras.layers.Layer, keras.Variable]] = []

    def on_train_begin(self, logs=None):
        self._masks = []
        for layer in prunable_layers(self.model, self.pruning.layers):
            kernel = layer.kernel
            mask = keras.Variable(np.ones(kernel.shape), dtype=kernel.dtype, trainable=False, name=f"{layer.name}_mask")
            previous = kernel.constraint.constraint if isinstance(kernel.constraint, _Masked) else kernel.constraint
            kernel.constraint = _Masked(mask, previous)
            self._masks.append((layer, mask))
        # The constraints act inside the compiled train step: trace it anew with them.
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.scheduled = sparsity_at(epoch, self.pruning.target_sparsity, self.begin, self.end)
        if self.scheduled > 0:
            self.prune(self.scheduled)

    def on_train_end(self, logs=None):
        for layer, _ in self._masks:  # the saved model carries no pruning constraint
            kernel = layer.kernel
            kernel.constraint = kernel.constraint.constraint if isinstance(kernel.constraint, _Masked) else kernel.constraint
        self._masks = []

    def prune(self, sparsity: float) -> None:
        """Zero the smallest ``sparsity`` of each pruned kernel now and keep them at zero while fitting."""
        for layer, mask in self._masks:
            kernel = layer.kernel
            values = keras.ops.convert_to_numpy(kernel)
            new_mask = masks_for(values, sparsity)
            mask.assign(new_mask)
            kernel.assign(values * new_mask)

    def sparsity(self) -> dict[str, float]:
        """Fraction of exact zeros in each pruned kernel."""
        layers = [layer for layer, _ in self._masks] or prunable_layers(self.model, self.pruning.layers)
        return {layer.name: float(np.mean(keras.ops.convert_to_numpy(layer.kernel) == 0)) for layer in layers}
