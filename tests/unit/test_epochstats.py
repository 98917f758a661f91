"""history.json's per-epoch statistics, each against an independent computation."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fpgaflow.scores import per_class_auc, roc_auc
from fpgaflow_trainer.epochstats import (
    EpochStatistics,
    dead_fraction,
    gradient_norm,
    sparsity,
    weight_norms,
)


def test_auc_is_sklearns_including_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(2000), 2)  # many ties
    positives = rng.random(2000) < 0.3
    assert roc_auc(positives, scores) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)
    y = rng.integers(0, 3, 500)
    p = rng.dirichlet(np.ones(3), 500)
    p[y == 2, 2] += 1.0  # class 2 separable
    aucs = per_class_auc(y, p, ["a", "b", "c"])
    assert aucs["c"] == 1.0 and 0.35 < aucs["a"] < 0.65
    assert per_class_auc(np.zeros(10, int), np.ones((10, 2)), ["a", "b"]) == {"a": None, "b": None}


def _softmax_regression(n_in=4, n_out=3) -> keras.Model:
    inputs = keras.Input((n_in,))
    x = keras.layers.Dense(n_out, name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_gradient_norm_is_the_analytic_gradient_of_softmax_regression():
    rng = np.random.default_rng(1)
    model = _softmax_regression()
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64)
    w, b = (keras.ops.convert_to_numpy(v) for v in model.get_layer("fc1").weights)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(3)[y]
    expected = np.sqrt(np.sum((x.T @ residual / 64) ** 2) + np.sum((residual.mean(0)) ** 2))
    assert gradient_norm(model, x, y) == pytest.approx(expected, rel=1e-4)


def test_weight_norms_sparsity_and_dead_units():
    model = _softmax_regression()
    layer = model.get_layer("fc1")
    kernel = np.arange(12, dtype="float32").reshape(4, 3)  # one zero in twelve
    layer.kernel.assign(kernel)
    layer.bias.assign(np.array([3.0, 4.0, 0.0], dtype="float32"))
    assert weight_norms(model) == {"fc1": pytest.approx(np.sqrt((kernel**2).sum() + 25))}
    total, by_layer = sparsity(model)
    assert total == pytest.approx(1 / 12) and by_layer == {"fc1": pytest.approx(1 / 12)}, "biases do not count"
    assert dead_fraction(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])) == pytest.approx(2 / 3)


def test_epoch_statistics_make_one_row_of_every_quantity():
    rng = np.random.default_rng(2)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = rng.normal(size=(300, 4)).astype("float32"), rng.integers(0, 3, 300)
    row = EpochStatistics(x, y, x[:32], y[:32], ["a", "b", "c"])(model)
    assert set(row["val_auc"]) == {"a", "b", "c"} and all(0 <= v <= 1 for v in row["val_auc"].values())
    assert set(row["dead_relu_fraction"]) == {"fc1"} and set(row["weight_norm"]) == {"fc1", "out"}
    assert row["gradient_norm"] > 0 and row["sparsity"] == 0.0
    model.get_layer("fc1").bias.assign(np.full(8, -100.0, dtype="float32"))  # every unit dead
    assert EpochStatistics(x, y, x[:32], y[:32], ["a", "b", "c"])(model)["dead_relu_fraction"] == {"fc1": 1.0}
