"""Magnitude pruning: the schedule, the masks, and a fit that ends at the target sparsity."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fpgaflow.errors import SpecError
from fpgaflow.spec import PruningSpec
from fpgaflow_trainer.pruning import Pruner, end_epoch, masks_for, prunable_layers, sparsity_at


def test_schedule_is_zero_before_begin_target_from_end_and_a_monotone_cubic_ramp_between():
    target, begin, end = 0.8, 2, 6
    assert sparsity_at(0, target, begin, end) == 0.0
    assert sparsity_at(1.99, target, begin, end) == 0.0
    assert sparsity_at(begin, target, begin, end) == 0.0
    assert sparsity_at(end, target, begin, end) == target
    assert sparsity_at(end + 10, target, begin, end) == target
    assert sparsity_at(4, target, begin, end) == pytest.approx(target * (1 - 0.5**3))  # halfway: 7/8 of it
    ramp = [sparsity_at(t, target, begin, end) for t in np.linspace(0, 8, 161)]
    assert all(b >= a for a, b in zip(ramp, ramp[1:], strict=False))
    assert ramp[-1] == target


def test_end_epoch_defaults_to_the_last_float_epoch():
    assert end_epoch(PruningSpec(target_sparsity=0.5), float_epochs=10) == 9
    assert end_epoch(PruningSpec(target_sparsity=0.5, begin_epoch=1, end_epoch=4), float_epochs=10) == 4
    assert end_epoch(PruningSpec(target_sparsity=0.5), float_epochs=1) == 0


@pytest.mark.parametrize("shape", [(16, 64), (3, 3, 4, 8), (5, 5)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.75, 0.9])
def test_masks_zero_exactly_the_smallest_fraction_of_each_kernel(shape, sparsity):
    weights = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    mask = masks_for(weights, sparsity)
    assert mask.shape == weights.shape and set(np.unique(mask)) <= {0.0, 1.0}
    zeroed = mask == 0
    assert zeroed.sum() == round(sparsity * weights.size)
    if 0 < zeroed.sum() < weights.size:
        assert np.abs(weights[zeroed]).max() <= np.abs(weights[~zeroed]).min()


def test_masks_hit_the_count_exactly_with_tied_magnitudes():
    weights = np.array([[0.5, -0.5, 0.5], [0.5, 0.0, -0.5]], dtype=np.float32)
    mask = masks_for(weights, 0.5)
    assert (mask == 0).sum() == 3 and mask[1, 1] == 0


def _tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16,), name="features")
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="output")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


def _data(n: int = 512):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    return x, (x[:, :5] + 0.3 * rng.normal(size=(n, 5))).argmax(axis=1)


def _zeros(model: keras.Model, name: str) -> int:
    return int((keras.ops.convert_to_numpy(model.get_layer(name).kernel) == 0).sum())


def test_prunable_layers_are_dense_and_conv_kernels_or_the_named_ones():
    model = _tiny_model()
    assert [layer.name for layer in prunable_layers(model)] == ["fc1", "fc2", "output"]
    assert [layer.name for layer in prunable_layers(model, ["fc2"])] == ["fc2"]
    with pytest.raises(SpecError, match="'fc9'"):
        prunable_layers(model, ["fc9"])
    with pytest.raises(SpecError, match="'features' has no kernel"):
        prunable_layers(model, ["features"])


@pytest.mark.slow
def test_a_fit_reaches_the_target_sparsity_and_the_zeros_survive_training(tmp_path):
    model, (x, y) = _tiny_model(), _data()
    pruning = PruningSpec(target_sparsity=0.75, begin_epoch=0, end_epoch=2)
    pruner = Pruner(pruning, float_epochs=4)
    model.fit(x, y, epochs=4, batch_size=64, callbacks=[pruner], verbose=0)
    for name in ("fc1", "fc2", "output"):
        kernel = model.get_layer(name).kernel
        # Adam moves every weight each step (lr 1e-2, 8 steps an epoch after the last prune): only the
        # masks keep exactly these zeros.
        assert _zeros(model, name) == round(0.75 * np.prod(kernel.shape)), name
    assert pruner.sparsity() == pytest.approx({"fc1": 0.75, "fc2": 0.75, "output": 0.75}, abs=0.01)
    model.save(tmp_path / "pruned.keras")
    reloaded = keras.models.load_model(tmp_path / "pruned.keras")
    assert [_zeros(reloaded, n) for n in ("fc1", "fc2", "output")] == [_zeros(model, n) for n in ("fc1", "fc2", "output")]


@pytest.mark.slow
def test_a_resumed_run_and_a_second_model_continue_from_their_weights():
    model, (x, y) = _tiny_model(), _data()
    pruning = PruningSpec(target_sparsity=0.5, begin_epoch=1, end_epoch=3, layers=["fc1"])
    model.fit(x, y, epochs=3, batch_size=64, callbacks=[Pruner(pruning, float_epochs=5)], verbose=0)
    size = 16 * 32
    assert _zeros(model, "fc1") == round(sparsity_at(2, 0.5, 1, 3) * size)  # the ramp's value at the last epoch run
    assert _zeros(model, "fc2") == 0  # not named
    # Resumed in a fresh callback, as after a crash: masks re-derived from the weights at epoch 3's sparsity.
    model.fit(x, y, epochs=5, initial_epoch=3, batch_size=64, callbacks=[Pruner(pruning, float_epochs=5)], verbose=0)
    assert _zeros(model, "fc1") == round(0.5 * size)
    # A second model (the QAT phase) fitted with the same schedule later keeps the target.
    second = _tiny_model(seed=1)
    second.set_weights(model.get_weights())
    second.fit(x, y, epochs=7, initial_epoch=5, batch_size=64, callbacks=[Pruner(pruning, float_epochs=5)], verbose=0)
    assert _zeros(second, "fc1") == round(0.5 * size)
    assert np.array_equal(keras.ops.convert_to_numpy(second.get_layer("fc1").kernel) == 0,
                          keras.ops.convert_to_numpy(model.get_layer("fc1").kernel) == 0)
