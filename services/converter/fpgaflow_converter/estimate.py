"""Resource and latency estimates of hls4ml firmware without vendor tools (see docs/estimates.md).

Per layer: DSP48E2, LUT, FF and BRAM18 counts, latency in cycles and the initiation interval, from the
layer's shape, fixed-point widths, reuse factor, strategy and pruned (exactly zero) weights. Dense,
activations (ReLU, table activations, linear) and Softmax are modelled; other layers are listed with
``modelled: False`` and zero cost. Latency of io_parallel layers is the first-order model of
``timing.py`` (the one the ``fpga`` target reports); io_stream adds a FIFO stage per layer.
This is an estimate, not a synthesis report: DSPs are exact for the Latency strategy at moderate
precision, LUT/FF within a factor of about 2, BRAM18 within a few blocks.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from fpgaflow.emulation.timing import dense_timing, softmax_timing
from fpgaflow.errors import StageError

# DSP48E2 (UltraScale/UltraScale+, Xilinx UG579): a 27 x 18 two's complement multiplier.
DSP_A_BITS = 27
DSP_B_BITS = 18
# hls4ml's own Vivado DSP estimator (optimization/dsp_aware_pruning/objectives/vivado_objectives.py)
# counts no DSP for weights narrower than 9 bits; operands of <= 4 bits are also taken as LUT logic.
LUT_MULT_MAX_WEIGHT_BITS = 8
LUT_MULT_MAX_OPERAND_BITS = 4
# BRAM18 aspect ratios (depth, width) in simple dual port mode (UG573).
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM18_PORTS = 2
STREAM_FIFO_CYCLES = 2  # one write and one read register per layer-to-layer FIFO (assumption)
TABLE_ACTIVATIONS = {"sigmoid", "tanh", "softsign", "softplus", "elu", "selu", "hard_tanh", "gelu"}
FREE_CLASSES = {"Input", "InputLayer", "Flatten", "Reshape", "Transpose", "Dropout"}
ACTIVATION_CLASSES = {"Activation", "ParametrizedActivation", "LeakyReLU", "ReLU", "ThresholdedReLU", "PReLU"}
STRATEGIES = ("latency", "resource")

MODEL_LINE = (
    "fpgaflow analytic estimate (services/converter/estimate.py, docs/estimates.md): DSP = nonzero products / RF "
    "x DSP48E2 tiles, exact for the Latency strategy at 9-27 bit weights; LUT/FF within ~2x, BRAM18 within a few "
    "blocks, latency within a few cycles of vitis_hls; not a synthesis report"
)

_PRECISION = re.compile(r"^(?:ap_)?(u?)(fixed|int)<\s*(\d+)\s*(?:,\s*(-?\d+))?[^>]*>$")


@dataclass(frozen=True)
class LayerShape:
    """What the estimate needs of one hls4ml layer. Widths are total bits, *_integer the integer bits."""

    name: str
    class_name: str
    n_in: int
    n_out: int
    input_width: int = 16
    input_integer: int = 6
    result_width: int = 16
    result_integer: int = 6
    weight_width: int = 0
    weight_integer: int = 0
    bias_width: int = 0
    bias_integer: int = 0
    accum_width: int = 0
    accum_integer: int = 0
    reuse_factor: int = 1
    strategy: str = "latency"
    n_zero_weights: int = 0
    input_signed: bool = True
    weight_signed: bool = True
    activation: str = ""
    table_size: int = 1024
    table_width: int = 18
    inv_table_width: int = 18
    n_pixels: int = 1


def parse_precision(text: str) -> tuple[int, int, bool]:
    """(width, integer bits, signed) of ap_fixed<W,I,...>, ap_ufixed, ap_int<W>, ap_uint<W> or hls4ml's fixed<...>."""
    match = _PRECISION.match(str(text).strip().replace(" ", ""))
    if not match:
        raise StageError(f"cannot read the width of HLS type {text!r}: expected ap_fixed<W,I>, ap_ufixed, ap_int<W>")
    unsigned, kind, width, integer = match.groups()
    width = int(width)
    return width, (width if kind == "int" or integer is None else int(integer)), not unsigned


def _precision_of(precision) -> tuple[int, int, bool]:
    width = getattr(precision, "width", None)
    if width is not None:
        return int(width), int(getattr(precision, "integer", width)), bool(getattr(precision, "signed", True))
    return parse_precision(str(precision))


def _type_precision(layer, attr: str) -> tuple[int, int, bool] | None:
    named = layer.get_attr(attr)
    return None if named is None else _precision_of(named.precision)


def _strategy(layer) -> str:
    strategy = str(layer.get_attr("strategy") or "latency").lower()
    if strategy.startswith("resource"):
        return "resource"
    if strategy != "latency":
        raise StageError(f"layer {layer.name!r}: no estimate for strategy {strategy!r} (only Latency and Resource)")
    return strategy


def layers_from_hls_model(hls_model) -> list[LayerShape]:
    """The LayerShape of every layer of an hls4ml ModelGraph (compiled or not), in graph order."""
    shapes = []
    for layer in hls_model.get_layers():
        cls = layer.class_name
        if cls in ("Input", "InputLayer"):
            continue
        out = layer.get_output_variable()
        rw, ri, _ = _precision_of(out.type.precision)
        n_out = int(math.prod(out.shape))
        inp = layer.get_input_variable() if layer.inputs else None
        iw, ii, isigned = _precision_of(inp.type.precision) if inp is not None else (rw, ri, True)
        n_in = int(layer.get_attr("n_in") or (math.prod(inp.shape) if inp is not None else n_out))
        common = dict(name=layer.name, class_name=cls, n_in=n_in, n_out=n_out, input_width=iw, input_integer=ii,
                      input_signed=isigned, result_width=rw, result_integer=ri,
                      reuse_factor=int(layer.get_attr("reuse_factor") or 1))
        if cls == "Dense":
            weight = layer.weights["weight"]
            ww, wi, wsigned = _precision_of(weight.type.precision)
            bias = layer.weights.get("bias")
            bw, bi, _ = _precision_of(bias.type.precision) if bias is not None else (0, 0, True)
            aw, ai, _ = _type_precision(layer, "accum_t") or (rw, ri, True)
            data = weight.data
            shapes.append(LayerShape(
                **{**common, "n_out": int(layer.get_attr("n_out"))}, weight_width=ww, weight_integer=wi,
                weight_signed=wsigned, bias_width=bw, bias_integer=bi, accum_width=aw, accum_integer=ai,
                strategy=_strategy(layer), n_zero_weights=int(data.size - (data != 0).sum())))
        elif cls == "Softmax":
            ew, _, _ = _type_precision(layer, "exp_table_t") or (18, 8, True)
            vw, _, _ = _type_precision(layer, "inv_table_t") or (18, 8, True)
            shapes.append(LayerShape(**common, activation="softmax", table_size=int(layer.get_attr("table_size") or 1024),
                                     table_width=ew, inv_table_width=vw))
        elif cls in ACTIVATION_CLASSES:
            tw, _, _ = _type_precision(layer, "table_t") or (18, 8, True)
            activation = str(layer.get_attr("activation") or cls).lower()
            shapes.append(LayerShape(**common, activation=activation,
                                     table_size=int(layer.get_attr("table_size") or 1024), table_width=tw))
        else:
            shapes.append(LayerShape(**common))
    return shapes


def dsp_per_multiplier(width_a: int, width_b: int, signed_a: bool = True, signed_b: bool = True) -> int:
    """DSP48E2 tiles of one a x b product: 1 when it fits 27 x 18 (either way round), else cascaded tiles."""
    a, b = width_a + (not signed_a), width_b + (not signed_b)  # an unsigned operand needs a sign bit
    return min(math.ceil(a / DSP_A_BITS) * math.ceil(b / DSP_B_BITS),
               math.ceil(b / DSP_A_BITS) * math.ceil(a / DSP_B_BITS))


def multiplier_in_luts(weight_width: int, input_width: int) -> bool:
    """Whether Vivado/Vitis HLS builds the product in LUTs rather than a DSP (narrow operands)."""
    return weight_width <= LUT_MULT_MAX_WEIGHT_BITS or min(weight_width, input_width) <= LUT_MULT_MAX_OPERAND_BITS


def lut_multiplier_cost(width_a: int, width_b: int) -> int:
    """LUT6s of one product in fabric: about one LUT per two partial-product bits (a x b / 2)."""
    return math.ceil(width_a * width_b / 2)


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 blocks for a depth x width memory, at the best of the block's aspect ratios."""
    if depth <= 0 or width <= 0:
        return 0
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


def _tree_levels(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def _result(shape: LayerShape, io_type: str, clock_period_ns: float, *, dsp=0, lut=0, ff=0, bram18=0,
            latency=0, ii=1, modelled=True, **extra) -> dict:
    if io_type == "io_stream":
        fifo_bits = shape.n_out * shape.result_width
        latency += STREAM_FIFO_CYCLES
        ii = ii * max(1, shape.n_pixels)
        ff += fifo_bits * 2  # the FIFO's register stages (depth 1 per packed element, in and out)
        lut += math.ceil(fifo_bits / 32) + 8  # SRL/valid logic (assumption)
    return {"name": shape.name, "class_name": shape.class_name, "modelled": modelled, "dsp": int(dsp),
            "lut": int(lut), "ff": int(ff), "bram18": int(bram18), "latency_cycles": int(latency),
            "latency_ns": latency * clock_period_ns, "ii_cycles": int(ii), "ii_ns": ii * clock_period_ns, **extra}


def _dense(shape: LayerShape, clock_period_ns: float, io_type: str) -> dict:
    rf = max(1, shape.reuse_factor)
    total = shape.n_in * shape.n_out
    nonzero = max(0, total - shape.n_zero_weights)
    strategy = shape.strategy.lower()
    if strategy not in STRATEGIES:
        raise StageError(f"layer {shape.name!r}: no estimate for strategy {shape.strategy!r}")
    resource = strategy == "resource"
    # Latency strategy (and Resource at RF 1, where weights become constants): products by zero are dropped.
    # Resource strategy at RF > 1 reads weights from memory, so every product has a multiplier.
    products = total if resource and rf > 1 else nonzero
    n_mult = math.ceil(products / rf)
    product_width = shape.weight_width + shape.input_width
    accum = shape.accum_width or product_width + _tree_levels(shape.n_in)
    in_luts = multiplier_in_luts(shape.weight_width, shape.input_width)
    dsp = 0 if in_luts else n_mult * dsp_per_multiplier(shape.input_width, shape.weight_width,
                                                         shape.input_signed, shape.weight_signed)
    lut = n_mult * lut_multiplier_cost(shape.weight_width, shape.input_width) if in_luts else 0
    # Adder tree: one adder (accumulator width) per product, bias included; at RF > 1 the adders are reused.
    n_adders = math.ceil(max(products, shape.n_out) / rf)
    lut += n_adders * accum
    ff = n_mult * min(product_width, accum) + shape.n_out * (accum + shape.result_width)
    bram18 = 0
    weight_bits = products * shape.weight_width
    if resource and rf > 1:
        # weights reshaped to RF words of block_factor x W bits (hls4ml's ARRAY_RESHAPE block factor)
        bram18 = bram18_for(rf, math.ceil(total / rf) * shape.weight_width)
        lut += rf * shape.n_out // 4 + 32  # accumulator muxing and the RF counter (assumption)
        ff += shape.n_out * accum
    elif rf > 1:
        # Latency strategy at RF > 1: each multiplier selects its weight among RF constants
        lut += n_mult * shape.weight_width * math.ceil(rf / 4)
    timing = dense_timing(shape.name, shape.n_in, rf, strategy)
    return _result(shape, io_type, clock_period_ns, dsp=dsp, lut=lut, ff=ff, bram18=bram18,
                   latency=timing.latency_cycles, ii=timing.ii_cycles, multipliers=n_mult,
                   multipliers_in_luts=in_luts, nonzero_weights=nonzero, weight_bits=weight_bits)


def _table_copies(reads: int) -> int:
    return math.ceil(max(1, reads) / BRAM18_PORTS)


def _softmax(shape: LayerShape, clock_period_ns: float, io_type: str) -> dict:
    n = shape.n_in
    exp_bram = _table_copies(n) * bram18_for(shape.table_size, shape.table_width)
    inv_bram = bram18_for(shape.table_size, shape.inv_table_width)
    dsp = n * dsp_per_multiplier(shape.table_width, shape.inv_table_width)
    lut = n * (shape.input_width * 2 + shape.table_width) + (n - 1) * shape.table_width
    ff = n * (shape.input_width + shape.table_width + shape.result_width)
    timing = softmax_timing(shape.name, n)
    return _result(shape, io_type, clock_period_ns, dsp=dsp, lut=lut, ff=ff, bram18=exp_bram + inv_bram,
                   latency=timing.latency_cycles, ii=timing.ii_cycles)


def _activation(shape: LayerShape, clock_period_ns: float, io_type: str) -> dict:
    n = shape.n_in
    if shape.activation == "linear":
        return _result(shape, io_type, clock_period_ns, latency=0)
    if shape.activation in TABLE_ACTIVATIONS:
        bram = _table_copies(n) * bram18_for(shape.table_size, shape.table_width)
        lut = n * shape.input_width
        return _result(shape, io_type, clock_period_ns, lut=lut, ff=n * shape.result_width, bram18=bram, latency=2)
    # ReLU and its relatives: a sign test and a multiplexer per element
    lut = n * max(shape.result_width, 1)
    return _result(shape, io_type, clock_period_ns, lut=lut, ff=n * shape.result_width, latency=1)


def estimate_layer(shape: LayerShape, clock_period_ns: float, io_type: str = "io_parallel") -> dict:
    """DSP, LUT, FF, BRAM18, latency (cycles, ns) and II (cycles, ns) of one layer."""
    if io_type not in ("io_parallel", "io_stream"):
        raise StageError(f"io_type {io_type!r} is not io_parallel or io_stream")
    if shape.class_name == "Dense":
        return _dense(shape, clock_period_ns, io_type)
    if shape.class_name == "Softmax" or shape.activation == "softmax":
        return _softmax(shape, clock_period_ns, io_type)
    if shape.class_name in ACTIVATION_CLASSES:
        return _activation(shape, clock_period_ns, io_type)
    if shape.class_name in FREE_CLASSES:
        return _result(shape, "io_parallel", clock_period_ns, latency=0)
    return _result(shape, "io_parallel", clock_period_ns, latency=0, modelled=False)


def estimate(shapes: list[LayerShape], clock_period_ns: float, io_type: str = "io_parallel") -> dict:
    """Per-layer estimates and their totals: resources and latency add up, the II is the slowest layer's."""
    layers = [estimate_layer(s, clock_period_ns, io_type) for s in shapes]
    total = {key: sum(layer[key] for layer in layers) for key in ("dsp", "lut", "ff", "bram18", "latency_cycles")}
    total["latency_ns"] = total["latency_cycles"] * clock_period_ns
    total["ii_cycles"] = max((layer["ii_cycles"] for layer in layers), default=1)
    total["ii_ns"] = total["ii_cycles"] * clock_period_ns
    unmodelled = [layer["name"] for layer in layers if not layer["modelled"]]
    model = MODEL_LINE + (f"; not modelled (counted as 0): {', '.join(unmodelled)}" if unmodelled else "")
    return {"layers": layers, "total": total, "model": model, "clock_period_ns": clock_period_ns,
            "io_type": io_type, "shapes": [asdict(s) for s in shapes]}
