"""The converter's first-order timing model: what the fpga target reports as device latency."""

import pytest

from fpgaflow.emulation.timing import dense_timing, device_seconds, device_timing, softmax_timing
from fpgaflow_converter.estimate import LayerShape, estimate


def test_a_dense_layer_takes_its_reuse_factor_then_an_adder_tree():
    assert dense_timing("fc", n_in=16, reuse_factor=1).latency_cycles == 1 + 1 + 2  # log2(16) = 4 levels, 2 a cycle
    assert dense_timing("fc", n_in=16, reuse_factor=4).latency_cycles == 4 + 1 + 1  # 4 products summed: 2 levels
    assert dense_timing("fc", n_in=16, reuse_factor=4).ii_cycles == 4
    assert dense_timing("fc", n_in=16, reuse_factor=4, strategy="Resource").latency_cycles == 8


def test_the_device_timing_is_the_estimates_latency_and_ii():
    layers = [LayerShape("fc1", "Dense", 16, 8, reuse_factor=2), LayerShape("out", "Dense", 8, 5)]
    timing = device_timing(estimate(layers, clock_period_ns=5.0))
    assert timing["latency_cycles"] == dense_timing("fc1", 16, 2).latency_cycles + dense_timing("out", 8, 1).latency_cycles
    assert timing["ii_cycles"] == 2 and timing["ii_ns"] == 10.0 and timing["clock_period_ns"] == 5.0
    assert [layer["name"] for layer in timing["layers"]] == ["fc1", "out"]
    assert device_seconds(timing, 1) == pytest.approx(timing["latency_ns"] * 1e-9)
    assert device_seconds(timing, 11) == pytest.approx((timing["latency_cycles"] + 10 * 2) * 5e-9)
    assert softmax_timing("softmax", 5).ii_cycles == 1
