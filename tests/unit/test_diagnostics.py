"""Training diagnostics: each check on its own, and a NaN injected into a real Keras fit stops it."""

import keras
import numpy as np

from fpgaflow_trainer.diagnostics import (
    Diagnostics,
    check_dead_relus,
    check_divergence,
    check_gradient,
    check_loss,
    check_plateau,
    check_weights,
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
    assert check_divergence([1.0, 0.5, 0.6], factor=1.3) is None and check_divergence([1.0, 0.5, 0.6], factor=1.1)
    assert check_plateau([1.0, 0.8, 0.7, 0.6], epochs=2) is None, "still improving"
    assert check_plateau([1.0, 0.8, 0.7], epochs=3) is None, "not enough epochs to tell"
    found = check_plateau([1.0, 0.5, 0.50001, 0.5, 0.50002], epochs=3, tolerance=1e-3)
    assert "plateau" in found and "last 3 epochs" in found
    assert check_plateau([1.0, 0.5, 0.5, 0.5], epochs=0) is None, "0 turns the check off"
    assert check_gradient(12.0, limit=100) is None and check_gradient(None) is None
    assert "exploded" in check_gradient(1e6, limit=1e4) and "exploded" in check_gradient(float("inf"))
    assert check_dead_relus({"fc1": 0.5, "fc2": 0.2}, limit=0.9) is None and check_dead_relus(None) is None
    assert "95% of the units of fc2" in check_dead_relus({"fc1": 0.5, "fc2": 0.95}, limit=0.9)
    model = _model()
    assert check_weights(model) is None
    kernel = model.get_layer("fc1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    assert "fc1" in check_weights(model)


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
    model, diagnostics = _model(), Diagnostics([])
    fit = model.fit(x, y, epochs=10, batch_size=64, validation_split=0.2, callbacks=[InjectNaN(), diagnostics], verbose=0)
    assert diagnostics.diagnosis is not None and diagnostics.diagnosis.epoch == 2
    assert "non-finite weights in" in diagnostics.diagnosis.message and "out" in diagnostics.diagnosis.message
    assert len(fit.history["loss"]) == 2, "training stopped at the diagnosed epoch"
