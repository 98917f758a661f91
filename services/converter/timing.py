"""A first-order timing model of the generated firmware (io_parallel), without vendor tools.

Per layer, in clock cycles:

- Dense, Latency strategy: the reuse factor RF is both its initiation interval and the cycles it spends
  multiplying; then one register stage and an adder tree over the ceil(n_in/RF) products summed in
  parallel, ADDER_LEVELS_PER_CYCLE levels of which fit one clock. Resource strategy: the same plus
  RESOURCE_EXTRA_CYCLES of accumulator and BRAM read registers.
- Activation (a table or a comparison): one cycle, II 1.
- Softmax: a max tree, the exp table read, a sum tree, the 1/x table read and the multiply.

The design's latency is the sum over layers and its initiation interval the largest layer's (the
top function is one pipeline). A batch of B samples takes latency + (B - 1) * II cycles on one device.
This is the estimate the `fpga` serving target reports as its modelled device latency; a synthesis
report (vitis_hls) is the reference it approximates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ADDER_LEVELS_PER_CYCLE = 2
RESOURCE_EXTRA_CYCLES = 2


@dataclass(frozen=True)
class LayerTiming:
    name: str
    kind: str
    latency_cycles: int
    ii_cycles: int


def _tree_levels(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def dense_timing(name: str, n_in: int, reuse_factor: int, strategy: str = "latency") -> LayerTiming:
    rf = max(1, reuse_factor)
    adder_cycles = math.ceil(_tree_levels(math.ceil(n_in / rf)) / ADDER_LEVELS_PER_CYCLE)
    latency = rf + 1 + adder_cycles + (RESOURCE_EXTRA_CYCLES if strategy.lower() == "resource" else 0)
    return LayerTiming(name, "Dense", latency, rf)


def softmax_timing(name: str, n_in: int) -> LayerTiming:
    tree = math.ceil(_tree_levels(n_in) / ADDER_LEVELS_PER_CYCLE)
    return LayerTiming(name, "Softmax", 2 * tree + 3, 1)


def layer_timing(name: str, class_name: str, attrs: dict) -> LayerTiming | None:
    """The timing of one hls4ml layer from its class and attributes; None for layers that cost nothing."""
    if class_name in ("Input",):
        return None
    if class_name == "Dense":
        return dense_timing(name, int(attrs["n_in"]), int(attrs.get("reuse_factor") or 1), str(attrs.get("strategy") or "latency"))
    if class_name == "Softmax":
        return softmax_timing(name, int(attrs["n_in"]))
    if class_name in ("Activation", "ParametrizedActivation", "LeakyReLU", "ReLU"):
        return LayerTiming(name, class_name, 1, 1)
    raise ValueError(f"no timing model for layer {name!r} of type {class_name}")


def estimate(layers: list[LayerTiming], clock_period_ns: float) -> dict:
    latency = sum(t.latency_cycles for t in layers)
    ii = max((t.ii_cycles for t in layers), default=1)
    return {
        "model": "fpgaflow first-order io_parallel timing model (services/converter/timing.py)",
        "clock_period_ns": clock_period_ns,
        "latency_cycles": latency,
        "ii_cycles": ii,
        "latency_ns": latency * clock_period_ns,
        "ii_ns": ii * clock_period_ns,
        "layers": [asdict(t) for t in layers],
    }


def estimate_hls_model(hls_model, clock_period_ns: float) -> dict:
    """The estimate for a converted hls4ml model (its graph's layers and their attributes)."""
    timings = []
    for layer in hls_model.get_layers():
        attrs = {k: layer.get_attr(k) for k in ("n_in", "reuse_factor", "strategy")}
        timing = layer_timing(layer.name, layer.class_name, attrs)
        if timing is not None:
            timings.append(timing)
    return estimate(timings, clock_period_ns)


def device_seconds(timing: dict, batch: int) -> float:
    """Modelled time for one device to compute a batch: latency + (batch - 1) * II."""
    cycles = timing["latency_cycles"] + (batch - 1) * timing["ii_cycles"]
    return cycles * timing["clock_period_ns"] * 1e-9
