"""The cpu target's back end: the Keras model converted to LiteRT at load and run by LiteRT's interpreter, with
TensorFlow's answers (within LITERT_TOLERANCE), at every batch size and from several compute threads; TensorFlow
itself where the conversion fails or its answers differ, the description saying why."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fpgaflow.spec import ModelSpec
from fpgaflow_inference import backends
from fpgaflow_inference.backends import (
    LITERT_TOLERANCE,
    KerasBackend,
    LiteRTBackend,
    cpu_backend,
    self_check_inputs,
)

MODELS = {"mlp": ((16,), {}), "cnn": ((8, 8, 1), {"type": "cnn", "filters": [4, 8], "layers": [16]})}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An MLP (the jet tagger's shape) and a small CNN, with random weights, saved as the trainer saves them."""
    import keras

    from fpgaflow_trainer.model import build_model

    keras.utils.set_random_seed(5)
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, (shape, fields) in MODELS.items():
        paths[name] = folder / f"{name}.keras"
        build_model(ModelSpec(**fields), shape, 5).save(paths[name])
    return paths


@pytest.fixture(scope="module")
def reference(saved):
    return {name: KerasBackend(path, "cpu", "/CPU:0") for name, path in saved.items()}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_litert_serves_the_model_with_tensorflows_answers_at_every_batch_size(saved, reference, name):
    backend = cpu_backend(saved[name])
    assert isinstance(backend, LiteRTBackend), backend.description
    assert backend.target == "cpu"
    assert "LiteRT" in backend.description and "self-check" in backend.description
    x = self_check_inputs(MODELS[name][0]) * 0.3
    for batch in (1, 7, 1, 64, 512, 3):  # the interpreter is resized whenever the shape changes, back and forth
        got, want = backend.predict(x[:batch]), reference[name].predict(x[:batch])
        assert got.shape == want.shape == (batch, 5) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=LITERT_TOLERANCE)
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)


def test_answers_are_not_overwritten_by_the_next_call(saved):
    backend = cpu_backend(saved["mlp"])
    x = self_check_inputs((16,))
    first = backend.predict(x[:4])
    kept = first.copy()
    backend.predict(x[100:104])
    np.testing.assert_array_equal(first, kept)


def test_compute_threads_each_get_their_own_interpreter(saved, reference):
    """The server's compute pool may run batches at once: every answer must be the one for its own input."""
    backend = cpu_backend(saved["mlp"])
    x = self_check_inputs((16,))

    def run(seed: int) -> float:
        rng = np.random.default_rng(seed)
        worst = 0.0
        for _ in range(200):
            start, batch = int(rng.integers(0, 400)), int(rng.integers(1, 33))
            got = backend.predict(x[start:start + batch])
            worst = max(worst, float(np.abs(got - reference["mlp"].predict(x[start:start + batch])).max()))
        return worst

    with ThreadPoolExecutor(4) as pool:
        assert max(pool.map(run, range(8))) <= LITERT_TOLERANCE


def test_a_model_the_converter_refuses_is_served_by_tensorflow(saved, reference, monkeypatch):
    import tensorflow as tf

    def refuse(model):
        raise RuntimeError("Some ops are not supported by the native TFLite runtime\nmore lines")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", refuse)
    backend = cpu_backend(saved["mlp"])
    assert isinstance(backend, KerasBackend)
    assert backend.description.endswith("(not LiteRT: RuntimeError: Some ops are not supported by the native TFLite runtime)")
    x = self_check_inputs((16,))[:9]
    np.testing.assert_array_equal(backend.predict(x), reference["mlp"].predict(x))


def test_answers_that_differ_from_tensorflows_are_refused(saved, monkeypatch):
    call = backends._LiteRunner.__call__
    monkeypatch.setattr(backends._LiteRunner, "__call__", lambda self, x: call(self, x) + np.float32(2e-4))
    backend = cpu_backend(saved["mlp"])
    assert isinstance(backend, KerasBackend)
    assert re.search(r"\(not LiteRT: its answers differed from TensorFlow's by 0\.0002\d* on the self-check, more than 1e-05\)$",
                     backend.description), backend.description
