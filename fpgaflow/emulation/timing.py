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
The converter's estimate (services/converter/estimate.py) uses these per-layer functions; its totals
are what the `fpga` serving target reports as its modelled device latency (``device_timing``); a
synthesis report (vitis_hls) is the reference it approximates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def device_timing(estimate: dict) -> dict:
    """timing.json, what the `fpga` target models its device with: the latency and II of the converter's
    estimate (services/converter/estimate.py, whose Dense and Softmax latencies are the functions above)."""
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
