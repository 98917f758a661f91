"""The modelled device timing the fpga target reports: the converter's estimate's latency and II."""

import pytest

from fpgaflow.emulation.timing import device_seconds, device_timing
from fpgaflow_converter.estimate import estimate
from fpgaflow_converter.layershapes import LayerShape


def test_the_device_timing_is_the_estimates_latency_and_ii():
    layers = [LayerShape("fc1", "Dense", 16, 8, weight_width=16, reuse_factor=2),
              LayerShape("out", "Dense", 8, 5, weight_width=16)]
    est = estimate(layers, clock_period_ns=5.0)
    timing = device_timing(est)
    assert timing["latency_cycles"] == est["total"]["latency_cycles"] == sum(
        layer["latency_cycles"] for layer in est["layers"]) > 0
    assert timing["ii_cycles"] == 2 and timing["ii_ns"] == 10.0 and timing["clock_period_ns"] == 5.0
    assert [layer["name"] for layer in timing["layers"]] == ["fc1", "out"]
    assert device_seconds(timing, 1) == pytest.approx(timing["latency_ns"] * 1e-9)
    assert device_seconds(timing, 11) == pytest.approx((timing["latency_cycles"] + 10 * 2) * 5e-9)
