"""The modelled device timing the `fpga` serving target reports: the converter's estimate of the firmware's
latency and initiation interval (services/converter/fpgaflow_converter/estimate.py, calibrated on synthesis
reports; docs/estimates.md). A batch of B samples takes latency + (B - 1) * II cycles on one device.
"""

from __future__ import annotations


def device_timing(estimate: dict) -> dict:
    """timing.json, what the `fpga` target models its device with: the latency and II of the converter's
    estimate (services/converter/fpgaflow_converter/estimate.py)."""
    total = estimate["total"]
    return {
        "model": estimate["model"],
        "clock_period_ns": estimate["clock_period_ns"],
        **{key: total[key] for key in ("latency_cycles", "ii_cycles", "latency_ns", "ii_ns")},
        "layers": [{key: layer[key] for key in ("name", "latency_cycles", "ii_cycles")} for layer in estimate["layers"]],
        # layers the estimate does not model (counted as 0 cycles): the modelled latency leaves them out
        "unmodelled": [layer["name"] for layer in estimate["layers"] if not layer.get("modelled", True)],
    }


def device_seconds(timing: dict, batch: int) -> float:
    """Modelled time for one device to compute a batch: latency + (batch - 1) * II."""
    cycles = timing["latency_cycles"] + (batch - 1) * timing["ii_cycles"]
    return cycles * timing["clock_period_ns"] * 1e-9
