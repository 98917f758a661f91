"""The converter's first-order timing model: what the fpga target reports as device latency."""

import pytest

from fpgaflow.converter.timing import dense_timing, device_seconds, estimate, layer_timing, softmax_timing


def test_a_dense_layer_takes_its_reuse_factor_then_an_adder_tree():
    assert dense_timing("fc", n_in=16, reuse_factor=1).latency_cycles == 1 + 1 + 2  # log2(16) = 4 levels, 2 a cycle
    assert dense_timing("fc", n_in=16, reuse_factor=4).latency_cycles == 4 + 1 + 1  # 4 products summed: 2 levels
    assert dense_timing("fc", n_in=16, reuse_factor=4).ii_cycles == 4
    assert dense_timing("fc", n_in=16, reuse_factor=4, strategy="Resource").latency_cycles == 8


def test_the_design_latency_is_the_sum_and_its_ii_the_slowest_layer():
    layers = [dense_timing("fc1", 16, 2), layer_timing("relu1", "Activation", {}), dense_timing("out", 8, 1),
              softmax_timing("softmax", 5)]
    est = estimate(layers, clock_period_ns=5.0)
    assert est["latency_cycles"] == sum(t.latency_cycles for t in layers)
    assert est["ii_cycles"] == 2 and est["ii_ns"] == 10.0
    assert device_seconds(est, 1) == pytest.approx(est["latency_ns"] * 1e-9)
    assert device_seconds(est, 11) == pytest.approx((est["latency_cycles"] + 10 * 2) * 5e-9)


def test_a_layer_without_a_model_is_named():
    with pytest.raises(ValueError, match="Conv2D"):
        layer_timing("conv", "Conv2D", {})
