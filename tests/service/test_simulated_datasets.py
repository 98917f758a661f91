"""The simulated data sets as the trainer loads them (from the suite's shared data-set cache, tests/conftest.py):
jets a tagger learns far above chance, and top versus QCD jet images of the spec's size, normalized and centred."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fpgaflow.preprocess import Scaler
from fpgaflow.spec import DatasetSpec, ModelSpec
from fpgaflow_trainer.datasets import load_dataset
from fpgaflow_trainer.model import build_model, model_input

pytestmark = pytest.mark.slow


def test_the_tutorial_mlp_learns_simulated_jets_far_above_chance():
    data = load_dataset(DatasetSpec(name="jets", samples=5000, seed=4))
    assert np.bincount(data.y_train).tolist() == [800] * 5, "classes balanced"
    scaler = Scaler.fit(data.x_train, data.features)
    keras.utils.set_random_seed(4)
    model = build_model(ModelSpec(type="mlp", layers=[64, 32, 32]), data.shape, len(data.classes))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(scaler.apply(data.x_train), data.y_train, epochs=15, batch_size=128, verbose=0)
    predicted = model.predict(scaler.apply(data.x_test), verbose=0).argmax(axis=1)
    accuracy = float((predicted == data.y_test).mean())
    assert accuracy > 0.6, f"accuracy {accuracy:.3f} on 1,000 test jets; chance is 0.2"
    per_class = {c: float((predicted[data.y_test == k] == k).mean()) for k, c in enumerate(data.classes)}
    assert per_class["t"] > 0.7 and per_class["g"] > 0.5, per_class


@pytest.fixture(scope="module")
def images():
    return load_dataset(DatasetSpec(name="jet-images", samples=400, image_size=24, test_fraction=0.25, seed=2))


def test_jet_images_have_the_spec_size_and_are_normalized(images):
    assert images.classes == ("qcd", "t") and images.shape == (24, 24, 1)
    assert images.x_train.shape == (300, 24, 24, 1) and images.x_test.shape == (100, 24, 24, 1)
    assert images.x_train.dtype == np.float32 and images.features[:2] == ("pixel_0_0", "pixel_0_1")
    every = np.concatenate([images.x_train, images.x_test])
    assert np.allclose(every.sum(axis=(1, 2, 3)), 1, atol=1e-5) and (every >= 0).all()
    assert np.bincount(images.y_train).tolist() == [150, 150]
    record = images.describe()["simulation"]
    assert record["classes"] == {"qcd": 200, "t": 200} and record["ptWindowGeV"] == [550, 650]
    assert "24x24 pixels" in record["images"] and "constituents" in record


def test_jet_images_are_centred_and_aligned(images):
    """The pT-weighted centre is the image's centre; after alignment the pT spreads along the vertical and
    the upper and right halves hold more of it."""
    x = np.concatenate([images.x_train, images.x_test])[..., 0]
    rows, cols = np.indices((24, 24))
    centre_r, centre_c = (x * rows).sum(axis=(1, 2)), (x * cols).sum(axis=(1, 2))
    assert abs(np.median(centre_r) - 11.5) < 1.5 and abs(np.median(centre_c) - 11.5) < 1.5
    spread_r = (x * (rows - centre_r[:, None, None]) ** 2).sum(axis=(1, 2))
    spread_c = (x * (cols - centre_c[:, None, None]) ** 2).sum(axis=(1, 2))
    assert (spread_r >= spread_c - 1e-3).mean() > 0.9
    assert (x[:, :12].sum(axis=(1, 2)) >= x[:, 12:].sum(axis=(1, 2))).mean() > 0.9, "more pT in the upper half"
    assert (x[:, :, 12:].sum(axis=(1, 2)) >= x[:, :, :12].sum(axis=(1, 2))).mean() > 0.9, "more pT in the right half"


def test_top_images_are_told_from_qcd_by_a_small_cnn(images):
    scaler = Scaler.fit(images.x_train, images.features)
    keras.utils.set_random_seed(2)
    model = build_model(ModelSpec(type="cnn", layers=[16], filters=[4, 8]), images.shape, 2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(model_input(model, scaler.apply(images.x_train)), images.y_train, epochs=20, batch_size=32, verbose=0)
    predicted = model.predict(model_input(model, scaler.apply(images.x_test)), verbose=0).argmax(axis=1)
    assert (predicted == images.y_test).mean() > 0.7
