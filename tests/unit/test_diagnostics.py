"""Training diagnostics: each check on its own, and a NaN injected into a real Keras fit stops it."""

import keras
import numpy as np
import pytest

from fpgaflow.trainer.diagnostics import (
    Diagnostics,
    check_dead_relus,
    check_divergence,
    check_loss,
    check_weights,
    dead_units,
)


def _model() -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_the_checks_name_what_is_wrong():
    assert check_loss(0.3) is None and "nan" in check_loss(float("nan"))
    assert check_divergence([1.0, 0.5, 0.6]) is None
    assert "diverged" in check_divergence([1.0, 0.5, 6.0])
    assert dead_units(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])) == pytest.approx(2 / 3)
    model = _model()
    assert check_weights(model) is None
    kernel = model.get_layer("fc1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    assert "fc1" in check_weights(model)


def test_dead_relus_are_found():
    model = _model()
    layer = model.get_layer("fc1")
    layer.kernel.assign(np.zeros(layer.kernel.shape, dtype="float32"))
    layer.bias.assign(np.full(layer.bias.shape, -1.0, dtype="float32"))
    assert "100% of the units of fc1" in check_dead_relus(model, np.random.default_rng(0).normal(size=(64, 4)))


class InjectNaN(keras.callbacks.Callback):
    """The test's fault: at the end of epoch 2 a weight becomes NaN."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            kernel = self.model.get_layer("out").kernel
            values = keras.ops.convert_to_numpy(kernel).copy()
            values[0, 0] = np.nan
            kernel.assign(values)


def test_a_nan_injected_into_training_stops_it_with_its_reason_and_epoch():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(512, 4)).astype("float32"), rng.integers(0, 2, 512)
    model, diagnostics = _model(), Diagnostics(x[:64])
    fit = model.fit(x, y, epochs=10, batch_size=64, validation_split=0.2, callbacks=[InjectNaN(), diagnostics], verbose=0)
    assert diagnostics.diagnosis is not None and diagnostics.diagnosis.epoch == 2
    assert "non-finite weights in" in diagnostics.diagnosis.message and "out" in diagnostics.diagnosis.message
    assert len(fit.history["loss"]) == 2, "training stopped at the diagnosed epoch"
