"""Resource and latency estimates of hls4ml firmware without vendor tools (see docs/estimates.md).

Two parts:

1. **Structure** (this module, no fitted number): from each layer's shape (``layershapes.LayerShape``), fixed-point widths, reuse
   factor, strategy, pruned weights and io type, the quantities the synthesis tools build: multipliers by
   operand class (both operands wide, one narrow, both narrow), their DSP48E2 tiles, adder-tree inputs and
   depth, the pixel loop's trips, elementwise logic, tables and stream FIFOs. These become a few
   **features** per quantity (DSP, LUT, FF, latency cycles).
2. **Calibration** (``calibration/``): per HLS backend (Vivado HLS, Vitis HLS), the constant of each
   feature, fitted (non-negative least squares on relative error) to public C-synthesis reports of hls4ml
   designs, and each quantity's error on held-out reports, which every estimate carries as its uncertainty.

BRAM18 is structural (weight ROMs of the Resource strategy, activation tables), not fitted.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from fpgaflow.errors import StageError
from fpgaflow_converter.layershapes import (
    ACTIVATION_CLASSES,
    ELEMENTWISE_CLASSES,
    FREE_CLASSES,
    MAC_CLASSES,
    POOL_CLASSES,
    STRATEGIES,
    TABLE_ACTIVATIONS,
    LayerShape,
)

# DSP48E2 (UltraScale/UltraScale+, Xilinx UG579): a 27 x 18 two's complement multiplier.
DSP_A_BITS = 27
DSP_B_BITS = 18
# Operand classes of a product. WIDE: both operands of at least 9 bits (hls4ml's own Vivado DSP estimator,
# optimization/dsp_aware_pruning/objectives/vivado_objectives.py, counts no DSP below 9-bit weights);
# MIXED: one operand of 5 to 8 bits and the other wider (a QKeras weight times a 16-bit input: Vivado HLS
# still uses DSPs for most, Vitis HLS for few); NARROW: both at most 8 bits or one at most 4, built in LUTs.
WIDE_BITS = 9
NARROW_BITS = 4
# BRAM18 aspect ratios (depth, width) in simple dual port mode (UG573).
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM18_PORTS = 2
BACKENDS = ("Vivado", "Vitis")
REFERENCE_CLOCK_NS = 5.0  # adder levels per cycle scale with the clock period relative to this one

QUANTITIES = ("dsp", "lut", "ff", "latency_cycles")
LABELS = {"dsp": "DSP", "lut": "LUT", "ff": "FF", "latency_cycles": "latency"}

# The features of each quantity, in the order of a backend's fitted constants (calibration/__init__.py).
FEATURES = {
    "dsp": ("wide_products_rf1", "unknown_weight_products_rf1", "wide_products_reused", "mixed_products",
            "table_products"),
    "lut": ("lut_product_bits", "shift_add_bits", "unknown_weight_product_bits", "adder_bits", "reused_weight_bits",
            "elementwise_bits",
            "comparator_bits", "table_bits", "dividers", "layers"),
    "ff": ("input_bits", "product_register_bits", "accumulator_bits", "reused_weight_bits", "elementwise_bits",
           "dividers", "layers", "stream_held_product_bits", "stream_window_bits"),
    "latency_cycles": ("mac_layers", "adder_levels", "loop_cycles", "stream_loop_cycles", "resource_calls",
                       "other_layers"),
}

def dsp_per_multiplier(width_a: int, width_b: int, signed_a: bool = True, signed_b: bool = True) -> int:
    """DSP48E2 tiles of one a x b product: 1 when it fits 27 x 18 (either way round), else cascaded tiles."""
    a, b = width_a + (not signed_a), width_b + (not signed_b)  # an unsigned operand needs a sign bit
    return min(math.ceil(a / DSP_A_BITS) * math.ceil(b / DSP_B_BITS),
               math.ceil(b / DSP_A_BITS) * math.ceil(a / DSP_B_BITS))


def operand_class(weight_width: int, input_width: int) -> str:
    """'wide' (both operands >= 9 bits), 'mixed' (one of 5-8 bits, the other wider) or 'narrow' (LUTs)."""
    low, high = sorted((weight_width, input_width))
    if low >= WIDE_BITS:
        return "wide"
    if low > NARROW_BITS and high >= WIDE_BITS:
        return "mixed"
    return "narrow"


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 blocks for a depth x width memory, at the best of the block's aspect ratios."""
    if depth <= 0 or width <= 0:
        return 0
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


def _levels(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def kind_of(shape: LayerShape) -> str:
    """mac, softmax, activation, pool, elementwise, free or unmodelled."""
    if shape.class_name in MAC_CLASSES:
        return "mac"
    if shape.class_name == "Softmax" or shape.activation == "softmax":
        return "softmax"
    if shape.class_name in ACTIVATION_CLASSES:
        return "activation"
    if shape.class_name in POOL_CLASSES:
        return "pool"
    if shape.class_name in ELEMENTWISE_CLASSES:
        return "elementwise"
    if shape.class_name in FREE_CLASSES:
        return "free"
    return "unmodelled"


def structure(shape: LayerShape, io_type: str) -> dict:
    """The layer's structural quantities: multipliers and their class, DSP tiles, adder inputs, accumulator and
    product widths, the pipeline's trips and II, elementwise bits, BRAM18. No fitted constant."""
    kind = kind_of(shape)
    rf = max(1, shape.reuse_factor)
    out = {"kind": kind, "multipliers": 0, "operands": "", "tiles": 0, "adders": 0, "ii": 1, "trips": 1,
           "depth_inputs": 0, "elementwise_bits": 0, "bram18": 0, "nonzero_weights": 0}
    if kind == "mac":
        strategy = shape.strategy.lower()
        if strategy not in STRATEGIES:
            raise StageError(f"layer {shape.name!r}: no estimate for strategy {shape.strategy!r}")
        per_pixel = shape.products or shape.n_in * shape.n_out
        nonzero = max(0, per_pixel - shape.n_zero_weights)
        # Latency strategy (and Resource at RF 1, where weights become constants): products by zero vanish.
        # Resource strategy at RF > 1 reads weights from memory, so every product keeps a multiplier.
        resource = strategy == "resource" and rf > 1
        used = per_pixel if resource else nonzero
        pf = max(1, shape.parallelization)
        multipliers = math.ceil(used / rf) * pf
        # at RF 1 the weights are constants and a simple one is a shift and an add (COMPLEX_DIGITS); with the
        # weights unknown (a design line of a trained model) the share is a fitted constant of its own
        constants_known = rf > 1 or shape.complex_weights >= 0
        complex_ = (min(shape.complex_weights, used) * pf if rf == 1 else multipliers) if constants_known else 0
        accum = shape.accum_width or shape.weight_width + shape.input_width + _levels(shape.n_in)
        # a constant weight (RF 1) is only as wide as its largest value
        weight_bits = shape.weight_bits_used if rf == 1 and shape.weight_bits_used else shape.weight_width
        out.update(multipliers=multipliers, operands=operand_class(shape.weight_width, shape.input_width),
                   tiles=dsp_per_multiplier(shape.input_width, weight_bits, shape.input_signed,
                                            shape.weight_signed),
                   adders=math.ceil(max(used, shape.n_out) / rf) * pf, accum_width=accum,
                   product_width=min(shape.weight_width + shape.input_width, accum), ii=rf,
                   trips=max(1, math.ceil(shape.trips / pf)) if shape.n_pixels > 1 else 1,
                   depth_inputs=math.ceil(shape.n_in / rf) if not shape.products else math.ceil(shape.n_in / shape.n_out / rf),
                   nonzero_weights=nonzero, resource=resource, outputs=shape.n_out * pf,
                   complex_multipliers=complex_ if constants_known else None,
                   simple_multipliers=multipliers - complex_ if constants_known else 0,
                   unknown_multipliers=0 if constants_known else multipliers,
                   # a convolution's window: io_parallel selects it from the whole input for each of its trips,
                   # io_stream shifts it out of a line buffer (one window of registers)
                   elementwise_bits=(shape.n_in if io_type == "io_stream" else shape.trips * shape.n_in)
                   * shape.input_width if shape.n_pixels > 1 else 0)
        if resource:
            # weights reshaped to RF words of block_factor x W bits (hls4ml's ARRAY_RESHAPE block factor)
            out["bram18"] = bram18_for(rf, math.ceil(per_pixel / rf) * shape.weight_width)
    elif kind == "softmax":
        n = shape.n_in
        out.update(table_products=n, elementwise_bits=n * (shape.input_width + shape.table_width),
                   bram18=math.ceil(n / BRAM18_PORTS) * bram18_for(shape.table_size, shape.table_width)
                   + bram18_for(shape.table_size, shape.inv_table_width), depth_inputs=n)
    elif kind == "activation":
        n = shape.n_in
        table = shape.activation in TABLE_ACTIVATIONS
        # a table read by every element at once (io_parallel) or by each channel of a pixel (io_stream)
        reads = max(1, n // max(1, shape.n_pixels)) if io_type == "io_stream" else n
        out.update(elementwise_bits=n * max(shape.result_width, shape.input_width),
                   table_bits=reads * shape.table_size * shape.table_width / 64 if table else 0,
                   bram18=math.ceil(n / BRAM18_PORTS) * bram18_for(shape.table_size, shape.table_width) if table else 0)
    elif kind == "pool":
        # io_parallel pooling is unrolled (no loop); io_stream walks the input pixels. An average over a window
        # that 'same' padding cuts divides by a count that is not a power of two: a divider per output.
        window_bits = shape.n_in * shape.n_pixels * shape.input_width
        out.update(elementwise_bits=0 if shape.activation == "max" else window_bits,
                   comparator_bits=window_bits if shape.activation == "max" else 0,
                   trips=shape.trips if io_type == "io_stream" else 1,
                   divider_bits=shape.n_out * shape.n_pixels * shape.result_width if shape.activation == "average_same"
                   else 0)
    elif kind == "elementwise":
        out.update(elementwise_bits=shape.n_out * shape.result_width,
                   table_products=shape.n_out if shape.class_name == "BatchNormalization" else 0)
    if io_type == "io_stream" and kind not in ("free", "unmodelled"):
        out["stream"] = True
        if kind in ("activation", "softmax", "elementwise", "pool"):
            # a stream layer's logic handles one pixel a cycle: its elementwise logic is one pixel's
            pixels = max(1, shape.n_pixels)
            out["trips"] = max(out["trips"], pixels)
            for key in ("elementwise_bits", "comparator_bits", "divider_bits", "table_products"):
                if key in out:
                    out[key] = math.ceil(out[key] / pixels)
    return out


def features(shape: LayerShape, io_type: str, clock_period_ns: float, first: bool = False) -> dict[str, dict[str, float]]:
    """The layer's feature values, per quantity (FEATURES' names): what each fitted constant multiplies. The
    design's ``first`` layer also pays for registering the design's input."""
    s = structure(shape, io_type)
    kind = s["kind"]
    values = {q: dict.fromkeys(FEATURES[q], 0.0) for q in QUANTITIES}
    if kind in ("free", "unmodelled"):
        return values
    dsp, lut, ff, cyc = values["dsp"], values["lut"], values["ff"], values["latency_cycles"]
    stream = bool(s.get("stream"))
    lut["layers"] = ff["layers"] = 1.0
    if first and not stream:  # io_parallel registers the design's whole input; a stream passes it through
        ff["input_bits"] = (shape.in_elements or shape.n_in) * shape.input_width
    if kind == "mac":
        m, rf = s["multipliers"], max(1, shape.reuse_factor)
        if s["operands"] == "wide":
            dsp["wide_products_rf1" if rf == 1 else "wide_products_reused"] = (s["complex_multipliers"] or 0) * s["tiles"]
            dsp["unknown_weight_products_rf1"] = s["unknown_multipliers"] * s["tiles"]
            lut["shift_add_bits"] = s["simple_multipliers"] * s["product_width"]
            lut["unknown_weight_product_bits"] = s["unknown_multipliers"] * s["product_width"]
        elif s["operands"] == "mixed":
            dsp["mixed_products"] = m
        lut["lut_product_bits"] = m * shape.weight_width * shape.input_width / 16.0
        lut["adder_bits"] = s["adders"] * s["accum_width"]
        # At RF > 1 each multiplier selects its weight among RF: the weights become LUT logic (or a ROM)
        lut["reused_weight_bits"] = ff["reused_weight_bits"] = (s["nonzero_weights"] * shape.weight_width
                                                                if rf > 1 else 0.0)
        ff["product_register_bits"] = m * s["product_width"]
        if stream and rf > 1 and not s.get("resource"):
            # a stream layer's pixel loop at II = RF holds every product (hls4ml's partitioned mult array) in
            # registers until its adder tree sums them; io_parallel's top-level pipeline does not
            ff["stream_held_product_bits"] = s["nonzero_weights"] * max(1, shape.parallelization) * s["product_width"]
        lut["elementwise_bits"] = ff["elementwise_bits"] = s["elementwise_bits"]
        if stream and shape.n_pixels > 1:  # a stream convolution's window: registers shifted each pixel
            ff["elementwise_bits"], ff["stream_window_bits"] = 0.0, s["elementwise_bits"]
        ff["accumulator_bits"] = s["outputs"] * (s["accum_width"] + shape.result_width)
        cyc["mac_layers"] = 1.0
        cyc["adder_levels"] = _levels(s["depth_inputs"]) * REFERENCE_CLOCK_NS / clock_period_ns
        cyc["loop_cycles"] = (s["trips"] * rf) if (s["trips"] > 1 or rf > 1) else 0.0
        # the Resource strategy's kernel at RF > 1 is a loop of its own, called once a pixel: its fill and
        # drain add to every call (a stream convolution takes RF + about 9 cycles a pixel)
        cyc["resource_calls"] = s["trips"] if s.get("resource") and s["trips"] > 1 else 0.0
    else:
        dsp["table_products"] = s.get("table_products", 0)
        lut["elementwise_bits"] = ff["elementwise_bits"] = s["elementwise_bits"]
        lut["dividers"] = ff["dividers"] = s.get("divider_bits", 0)
        lut["table_bits"] = s.get("table_bits", 0)
        lut["comparator_bits"] = s.get("comparator_bits", 0)
        ff["elementwise_bits"] += s.get("comparator_bits", 0)
        if stream and kind == "pool":  # a stream pooling layer's window, as a stream convolution's
            ff["stream_window_bits"], ff["elementwise_bits"] = ff["elementwise_bits"], 0.0
        cyc["other_layers"] = 1.0 + (_levels(shape.n_in) if kind == "softmax" else 0)
        if s["trips"] > 1:
            cyc["loop_cycles"] = s["trips"]
    if stream:
        ff["elementwise_bits"] += shape.n_out * shape.result_width / max(1, shape.n_pixels)  # the FIFO's word
    return values


def _constants(backend: str) -> dict:
    from fpgaflow_converter.calibration import calibrated  # the fit reads this module's features

    return calibrated(backend)


def estimate_layer(shape: LayerShape, clock_period_ns: float, io_type: str = "io_parallel",
                   backend: str = "Vitis", constants: dict | None = None, first: bool = False,
                   values: dict | None = None) -> dict:
    """DSP, LUT, FF, BRAM18, latency (cycles, ns) and II (cycles, ns) of one layer, with the backend's fitted
    constants (``calibration.calibrated``); ``values``: its features in the design (``layer_features``)."""
    if io_type not in ("io_parallel", "io_stream"):
        raise StageError(f"io_type {io_type!r} is not io_parallel or io_stream")
    if backend not in BACKENDS:
        raise StageError(f"no estimate for backend {backend!r}: calibrated for {', '.join(BACKENDS)}")
    theta = constants or _constants(backend)
    s = structure(shape, io_type)
    values = values or features(shape, io_type, clock_period_ns, first)
    predicted = {q: sum(theta[q][name] * value for name, value in values[q].items()) for q in QUANTITIES}
    latency = predicted["latency_cycles"]
    ii = s["ii"] * (s["trips"] if s.get("stream") or s["trips"] > 1 else 1)
    modelled = s["kind"] != "unmodelled"
    extra = {k: s[k] for k in ("multipliers", "complex_multipliers", "operands", "nonzero_weights")
             if s["kind"] == "mac"}
    return {"name": shape.name, "class_name": shape.class_name, "modelled": modelled,
            "dsp": round(predicted["dsp"]), "lut": round(predicted["lut"]), "ff": round(predicted["ff"]),
            "bram18": int(s["bram18"]), "latency_cycles": round(latency), "latency_ns": round(latency) * clock_period_ns,
            "ii_cycles": int(ii), "ii_ns": ii * clock_period_ns, **extra}


def dsp_tiles(shapes: list[LayerShape], io_type: str) -> int:
    """The DSP48 tiles of the design's widest product (1 when all fit one tile or none takes a DSP)."""
    macs = [structure(s, io_type) for s in shapes if kind_of(s) == "mac"]
    return max((m["tiles"] for m in macs if m["operands"] == "wide"), default=1)


def extrapolations(shapes: list[LayerShape], io_type: str, values: list[dict], theta: dict, backend: str) -> list[str]:
    """Where the design goes beyond the reports the backend's constants were fitted on: features no fitted
    report of the backend exercises (their constants come from both backends' reports), and products wider
    than any fitted report's (their DSP tiles are the DSP48E2's geometry, not a fit)."""
    out = []
    borrowed = [f"{LABELS[q]} ({', '.join(used)})" for q in QUANTITIES
                if (used := sorted({name for layer in values for name, value in layer[q].items()
                                    if value and name in theta["borrowed"][q]}))]
    if borrowed:
        out.append(f"{', '.join(borrowed)}: no {backend} report fitted on has these features; their constants are "
                   "fitted on both backends' reports")
    tiles = dsp_tiles(shapes, io_type)
    if tiles > theta["max_tiles"]:
        out.append(f"DSP: products of {tiles} DSP48 tiles (operands wider than 27 x 18 bits): no report fitted on "
                   "has them; their DSPs are the tiles' count, not a fit (docs/estimates.md, limits)")
    return out


def first_layer(shapes: list[LayerShape]) -> int:
    """The index of the layer that reads the design's input (the first one with a cost)."""
    return next((i for i, s in enumerate(shapes) if kind_of(s) not in ("free", "unmodelled")), 0)


def layer_features(shapes: list[LayerShape], io_type: str, clock_period_ns: float) -> list[dict]:
    """Each layer's features within its design: the first layer registers the design's input, and in io_stream
    (a dataflow pipeline) the layers' pixel loops overlap, so only the slowest one's loop adds to the latency."""
    first = first_layer(shapes)
    values = [features(s, io_type, clock_period_ns, i == first) for i, s in enumerate(shapes)]
    if io_type == "io_stream" and values:
        for value in values:  # a stream's pixel loop is a pipeline of its own
            cycles = value["latency_cycles"]
            cycles["stream_loop_cycles"], cycles["loop_cycles"] = cycles["loop_cycles"], 0.0
        slowest = max(range(len(values)), key=lambda i: values[i]["latency_cycles"]["stream_loop_cycles"]
                      + values[i]["latency_cycles"]["resource_calls"])
        for index, value in enumerate(values):
            if index != slowest:
                value["latency_cycles"]["stream_loop_cycles"] = value["latency_cycles"]["resource_calls"] = 0.0
    return values


def design_features(shapes: list[LayerShape], io_type: str, clock_period_ns: float) -> dict[str, dict[str, float]]:
    """The design's features: its layers', summed (what the calibration fits the constants on)."""
    total = {q: dict.fromkeys(FEATURES[q], 0.0) for q in QUANTITIES}
    for layer in layer_features(shapes, io_type, clock_period_ns):
        for q, values in layer.items():
            for name, value in values.items():
                total[q][name] += value
    return total


def estimate(shapes: list[LayerShape], clock_period_ns: float, io_type: str = "io_parallel",
             backend: str = "Vitis") -> dict:
    """Per-layer estimates and their totals (resources and latency add up; in io_stream only the slowest layer's
    pixel loop counts toward the latency; the II is the slowest layer's), each total with its uncertainty: the
    fitted model's mean relative error on held-out synthesis reports."""
    theta = _constants(backend)
    values = layer_features(shapes, io_type, clock_period_ns)
    layers = [estimate_layer(s, clock_period_ns, io_type, backend, theta, values=v) for s, v in zip(shapes, values, strict=True)]
    total = {key: sum(layer[key] for layer in layers) for key in ("dsp", "lut", "ff", "bram18", "latency_cycles")}
    total["latency_ns"] = total["latency_cycles"] * clock_period_ns
    total["ii_cycles"] = max((layer["ii_cycles"] for layer in layers), default=1)
    total["ii_ns"] = total["ii_cycles"] * clock_period_ns
    uncertainty = {q: theta["heldout_error"].get(q) for q in QUANTITIES}
    uncertainty["latency_ns"] = uncertainty["latency_cycles"]
    total["uncertainty"] = uncertainty
    total["caveats"] = extrapolations(shapes, io_type, values, theta, backend)
    unmodelled = [layer["name"] for layer in layers if not layer["modelled"]]
    model = (f"fpgaflow estimate calibrated on {theta['fit_rows']} {backend} HLS synthesis reports "
             f"(docs/estimates.md); held-out mean error DSP {_pct(uncertainty['dsp'])}, LUT {_pct(uncertainty['lut'])}, "
             f"FF {_pct(uncertainty['ff'])}, latency {_pct(uncertainty['latency_cycles'])}; not a synthesis report")
    model += f"; not modelled (counted as 0): {', '.join(unmodelled)}" if unmodelled else ""
    model += "".join(f"; extrapolated: {caveat}" for caveat in total["caveats"])
    return {"layers": layers, "total": total, "model": model, "backend": backend, "clock_period_ns": clock_period_ns,
            "io_type": io_type, "shapes": [asdict(s) for s in shapes]}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"
