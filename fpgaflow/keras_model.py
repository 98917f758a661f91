"""A trained model's Keras file, loaded by every stage that reads one: fpgaflow's own layers registered,
float and quantization-aware (HGQ2) models alike.

The trainer builds these layers and the converter, the inference server and the benchmarks load what it
saved, so their classes live here rather than in one of those services. Importing this module imports
Keras (and TensorFlow); HGQ2 only when a QAT model is loaded.

A QAT model computes in float64 (:data:`COMPUTE_DTYPE`), which holds every product and sum of its
fixed-point values exactly; HGQ2 creates its quantizers without a dtype, so a QAT model must be built and
loaded while the global dtype policy is float64 (:func:`exact_arithmetic`).
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
from keras import ops

COMPUTE_DTYPE = "float64"


# ------------------------------------------------------------------------------------ binarized layers


def binarize(x):
    """+1 where x >= 0, else -1 (in x's dtype)."""
    return ops.where(x >= 0, ops.ones_like(x), -ops.ones_like(x))


@keras.saving.register_keras_serializable(package="fpgaflow")
class ClipWeights(keras.constraints.Constraint):
    """Keeps the latent weights of a binarized layer in [-limit, limit], where a sign flip stays reachable."""

    def __init__(self, limit: float = 1.0):
        self.limit = float(limit)

    def __call__(self, w):
        return ops.clip(w, -self.limit, self.limit)

    def get_config(self) -> dict:
        return {"limit": self.limit}


@keras.saving.register_keras_serializable(package="fpgaflow")
class BinaryDense(keras.layers.Dense):
    """A Dense layer whose kernel is binarized to +-1 in the forward pass; gradients reach the latent real
    kernel unchanged (straight-through estimator). ``binary_kernel()`` is the +-1 kernel the hardware uses."""

    def __init__(self, units: int, **kwargs):
        kwargs.setdefault("kernel_constraint", ClipWeights(1.0))
        super().__init__(units, **kwargs)

    def call(self, inputs, training=None):
        kernel = ops.cast(self.kernel, inputs.dtype)
        kernel = kernel + ops.stop_gradient(binarize(kernel) - kernel)
        x = ops.matmul(inputs, kernel)
        if self.use_bias:
            x = ops.add(x, ops.cast(self.bias, x.dtype))
        return self.activation(x) if self.activation is not None else x

    def binary_kernel(self) -> np.ndarray:
        return np.where(keras.ops.convert_to_numpy(self.kernel) >= 0, 1.0, -1.0).astype(np.float32)


@keras.saving.register_keras_serializable(package="fpgaflow")
class SignActivation(keras.layers.Layer):
    """sign(x) as +-1 (0 maps to +1); the gradient passes straight through where |x| <= 1 and is 0 elsewhere."""

    def call(self, x):
        clipped = ops.clip(x, -1.0, 1.0)
        return clipped + ops.stop_gradient(binarize(x) - clipped)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="fpgaflow")
class BinarizeInput(keras.layers.Layer):
    """The input binarization of BNN-PYNQ's LFC: +1 where a raw value is >= ``raw_threshold``, else -1.

    The model takes standardized values, so the comparison is made per feature against ``thresholds`` (a
    non-trainable weight): ``raw_threshold`` standardized with that feature's mean and scale
    (``set_thresholds``). ``raw_threshold`` is kept for the export, whose host binarizes raw pixels."""

    def __init__(self, raw_threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.raw_threshold = float(raw_threshold)

    def build(self, input_shape):
        self.thresholds = self.add_weight(name="thresholds", shape=(int(input_shape[-1]),), initializer="zeros",
                                          trainable=False)

    def call(self, x):
        return binarize(x - ops.cast(self.thresholds, x.dtype))

    def set_thresholds(self, mean: np.ndarray, scale: np.ndarray) -> None:
        """The raw threshold in the standardized units of each feature ((t - mean) / scale)."""
        standardized = (self.raw_threshold - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64)
        self.thresholds.assign(standardized.astype(np.float32))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "raw_threshold": self.raw_threshold}


# ------------------------------------------------------------------------------------ quantization-aware models


@keras.saving.register_keras_serializable(package="fpgaflow")
class L1Float32(keras.regularizers.L1):
    """L1 of a float64 kernel, returned in float32: Keras adds regularization losses to a float32 loss."""

    def __call__(self, x):
        return keras.ops.cast(super().__call__(x), "float32")


@contextlib.contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Layers created inside compute in COMPUTE_DTYPE (HGQ2's quantizers follow the global policy)."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(COMPUTE_DTYPE)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def parents(layer: keras.layers.Layer) -> list[str]:
    """The names of the layers whose outputs a layer of a functional model reads, in order."""
    return [t._keras_history.operation.name for node in layer._inbound_nodes for t in node.input_tensors]


def is_qat(model: keras.Model) -> bool:
    """Whether ``model`` is made of HGQ2 layers (a QAT model) rather than float Keras layers."""
    return any(type(layer).__module__.startswith("hgq.") for layer in model.layers)


def saved_is_qat(path: str | Path) -> bool:
    """Whether the .keras file at ``path`` holds a QAT model (HGQ2 layers), without loading it."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return any(str(layer.get("module", "")).startswith("hgq.") for layer in config.get("config", {}).get("layers", []))


def load_model(path: str | Path) -> keras.Model:
    """keras.models.load_model for float and QAT models alike (a QAT model in exact arithmetic)."""
    if not saved_is_qat(path):
        return keras.models.load_model(path)
    import hgq  # noqa: F401  (registers the HGQ2 layers with Keras)

    with exact_arithmetic():
        return keras.models.load_model(path)
