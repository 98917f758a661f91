"""Resource and latency estimates of hls4ml firmware without vendor tools (see docs/estimates.md).

Two parts:

1. **Structure** (this module, no fitted number): from each layer's shape, fixed-point widths, reuse
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
import re
from dataclasses import asdict, dataclass, replace

from fpgaflow.errors import StageError

# DSP48E2 (UltraScale/UltraScale+, Xilinx UG579): a 27 x 18 two's complement multiplier.
DSP_A_BITS = 27
DSP_B_BITS = 18
# Operand classes of a product. WIDE: both operands of at least 9 bits (hls4ml's own Vivado DSP estimator,
# optimization/dsp_aware_pruning/objectives/vivado_objectives.py, counts no DSP below 9-bit weights);
# MIXED: one operand of 5 to 8 bits and the other wider (a QKeras weight times a 16-bit input: Vivado HLS
# still uses DSPs for most, Vitis HLS for few); NARROW: both at most 8 bits or one at most 4, built in LUTs.
WIDE_BITS = 9
NARROW_BITS = 4
# A product by a constant weight (reuse factor 1: the weights are literals in the firmware) whose non-adjacent form
# has at most two nonzero signed digits is a shift and an add, which the HLS tools build in LUTs; the others get a
# DSP. Where the weights are not known (a calibration row of a trained model), this share of the nonzero weights
# is taken to be "complex": the share measured on the demo's trained jet tagger at ap_fixed<16,6> (2,393 of 3,941;
# lecun_uniform random weights give 0.94, which hls4ml's synthesized test layers match: 56-63 DSPs of 64).
COMPLEX_DIGITS = 3
TRAINED_COMPLEX_SHARE = 0.61
# BRAM18 aspect ratios (depth, width) in simple dual port mode (UG573).
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM18_PORTS = 2
BACKENDS = ("Vivado", "Vitis")
REFERENCE_CLOCK_NS = 5.0  # adder levels per cycle scale with the clock period relative to this one

TABLE_ACTIVATIONS = {"sigmoid", "tanh", "softsign", "softplus", "elu", "selu", "hard_tanh", "gelu"}
FREE_CLASSES = {"Input", "InputLayer", "Flatten", "Reshape", "Transpose", "Dropout"}
ACTIVATION_CLASSES = {"Activation", "ParametrizedActivation", "LeakyReLU", "ReLU", "ThresholdedReLU", "PReLU",
                      "ELU", "HardActivation", "UnaryLUT"}
MAC_CLASSES = {"Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D", "DepthwiseConv1D",
               "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"}
POOL_CLASSES = {"Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D"}
ELEMENTWISE_CLASSES = {"BatchNormalization", "Merge", "ZeroPadding1D", "ZeroPadding2D", "Resize", "Concatenate"}
STRATEGIES = ("latency", "resource")
QUANTITIES = ("dsp", "lut", "ff", "latency_cycles")

# The features of each quantity, in the order of a backend's fitted constants (calibration/__init__.py).
FEATURES = {
    "dsp": ("wide_products_rf1", "wide_products_reused", "mixed_products", "table_products"),
    "lut": ("lut_product_bits", "shift_add_bits", "adder_bits", "reused_weight_bits", "elementwise_bits",
            "comparator_bits", "table_bits", "dividers", "layers"),
    "ff": ("input_bits", "product_register_bits", "accumulator_bits", "reused_weight_bits", "elementwise_bits",
           "dividers", "layers"),
    "latency_cycles": ("mac_layers", "adder_levels", "loop_cycles", "other_layers"),
}

_PRECISION = re.compile(r"^(?:ap_)?(u?)(fixed|int)<\s*(\d+)\s*(?:,\s*(-?\d+))?[^>]*>$")


@dataclass(frozen=True)
class LayerShape:
    """What the estimate needs of one hls4ml layer. Widths are total bits, *_integer the integer bits.

    For a convolution, ``n_in``/``n_out`` are its per-pixel kernel (kernel area x channels in, filters out),
    ``n_pixels`` the output positions and ``trips`` the pipeline's iterations (io_parallel: hls4ml's
    ``n_partitions``; io_stream: the input pixels); ``products`` the multiplications per output pixel
    (0: ``n_in x n_out``; a depthwise kernel has ``n_in``)."""

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
    trips: int = 1
    products: int = 0
    parallelization: int = 1
    complex_weights: int = -1  # nonzero weights of COMPLEX_DIGITS or more signed digits; -1: not known
    in_elements: int = 0  # the layer's whole input (0: n_in)


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


def _pixels(layer, prefix: str) -> int:
    return int(layer.get_attr(f"{prefix}_height") or 1) * int(layer.get_attr(f"{prefix}_width") or 1)


def _mac_shape(layer, cls: str, common: dict, io_type: str) -> LayerShape:
    weight = layer.weights["weight"]
    ww, wi, wsigned = _precision_of(weight.type.precision)
    bias = layer.weights.get("bias")
    bw, bi, _ = _precision_of(bias.type.precision) if bias is not None else (0, 0, True)
    aw, ai, _ = _type_precision(layer, "accum_t") or (common["result_width"], common["result_integer"], True)
    zeros, complex_ = zero_weights(weight.data, ww, wi), complex_weights(weight.data, ww, wi)
    if cls == "Dense":
        n_in, n_out, pixels, trips, products = int(layer.get_attr("n_in")), int(layer.get_attr("n_out")), 1, 1, 0
    else:
        kernel = int(layer.get_attr("filt_height") or 1) * int(layer.get_attr("filt_width") or 1)
        channels = int(layer.get_attr("n_chan"))
        n_in, n_out = kernel * channels, int(layer.get_attr("n_filt"))
        depthwise = cls.startswith("Depthwise")
        products = n_in if depthwise else 0
        pixels = _pixels(layer, "out")
        trips = (_pixels(layer, "in") if io_type == "io_stream"
                 else int(layer.get_attr("n_partitions") or pixels))
    return LayerShape(**{**common, "n_in": n_in, "n_out": n_out}, weight_width=ww, weight_integer=wi,
                      weight_signed=wsigned, bias_width=bw, bias_integer=bi, accum_width=aw, accum_integer=ai,
                      strategy=_strategy(layer), n_zero_weights=zeros, complex_weights=complex_, n_pixels=pixels, trips=trips, products=products,
                      parallelization=int(layer.get_attr("parallelization_factor") or 1))


def _codes(weights, width: int, integer: int):
    """The integer codes of weights cast to ap_fixed<width, integer> (truncation toward minus infinity, ap_fixed's
    default; saturation is ignored)."""
    import numpy as np

    return np.floor(np.asarray(weights, dtype=float) * 2.0 ** (width - integer)).astype(np.int64)


def zero_weights(weights, width: int, integer: int) -> int:
    """Weights that are zero once cast to ap_fixed<width, integer>: the synthesis tool drops their products."""
    return int((_codes(weights, width, integer) == 0).sum())


def signed_digits(codes):
    """Nonzero digits of each integer's non-adjacent form (its fewest signed binary digits)."""
    import numpy as np

    x = np.abs(np.asarray(codes, dtype=np.int64))
    half = x >> 1
    three_halves = x + half
    changed = half ^ three_halves
    return _popcount(three_halves & changed) + _popcount(half & changed)


def _popcount(x):
    import numpy as np

    count = np.zeros(x.shape, dtype=np.int64)
    while np.any(x):
        count += x & 1
        x = x >> 1
    return count


def complex_weights(weights, width: int, integer: int) -> int:
    """Weights whose product a synthesis tool gives a DSP at reuse factor 1: COMPLEX_DIGITS or more signed digits."""
    return int((signed_digits(_codes(weights, width, integer)) >= COMPLEX_DIGITS).sum())


def layers_from_hls_model(hls_model) -> list[LayerShape]:
    """The LayerShape of every layer of an hls4ml ModelGraph (compiled or not), in graph order."""
    io_type = str(hls_model.config.get_config_value("IOType") or "io_parallel")
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
                      reuse_factor=int(layer.get_attr("reuse_factor") or 1),
                      in_elements=int(math.prod(inp.shape)) if inp is not None else n_in)
        pixels = {"n_pixels": int(math.prod(out.shape[:-1]))} if len(out.shape) > 1 else {}
        if cls in MAC_CLASSES:
            shapes.append(_mac_shape(layer, cls, common, io_type))
        elif cls == "Softmax":
            ew, _, _ = _type_precision(layer, "exp_table_t") or (18, 8, True)
            vw, _, _ = _type_precision(layer, "inv_table_t") or (18, 8, True)
            shapes.append(LayerShape(**common, **pixels, activation="softmax",
                                     table_size=int(layer.get_attr("table_size") or 1024), table_width=ew,
                                     inv_table_width=vw))
        elif cls in ACTIVATION_CLASSES:
            tw, _, _ = _type_precision(layer, "table_t") or (18, 8, True)
            activation = str(layer.get_attr("activation") or cls).lower()
            shapes.append(LayerShape(**common, **pixels, activation=activation,
                                     table_size=int(layer.get_attr("table_size") or 1024), table_width=tw))
        elif cls in POOL_CLASSES:
            window = int(layer.get_attr("pool_height") or 1) * int(layer.get_attr("pool_width") or 1)
            channels = int(layer.get_attr("n_filt") or layer.get_attr("n_chan") or out.shape[-1])
            pixels = max(1, n_out // max(1, channels))
            if cls.startswith("Global"):
                window = max(1, math.prod(inp.shape) // channels) if inp is not None else 1
            padded = any(int(layer.get_attr(f"pad_{side}") or 0) for side in ("top", "bottom", "left", "right"))
            average = str(layer.get_attr("pool_op") or "").lower() == "average"
            shapes.append(LayerShape(**{**common, "n_in": window * channels, "n_out": channels}, n_pixels=pixels,
                                     activation=("average_same" if padded else "average") if average else "max",
                                     trips=pixels if io_type == "io_parallel" else
                                     max(1, (math.prod(inp.shape) // channels) if inp is not None else pixels)))
        else:
            shapes.append(LayerShape(**common, **pixels))
    return shapes


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
        # at RF 1 the weights are constants and a simple one is a shift and an add (COMPLEX_DIGITS)
        known = shape.complex_weights if shape.complex_weights >= 0 else round(TRAINED_COMPLEX_SHARE * nonzero)
        complex_ = min(known, used) * pf if rf == 1 else multipliers
        accum = shape.accum_width or shape.weight_width + shape.input_width + _levels(shape.n_in)
        out.update(multipliers=multipliers, operands=operand_class(shape.weight_width, shape.input_width),
                   tiles=dsp_per_multiplier(shape.input_width, shape.weight_width, shape.input_signed,
                                            shape.weight_signed),
                   adders=math.ceil(max(used, shape.n_out) / rf) * pf, accum_width=accum,
                   product_width=min(shape.weight_width + shape.input_width, accum), ii=rf,
                   trips=max(1, math.ceil(shape.trips / pf)) if shape.n_pixels > 1 else 1,
                   depth_inputs=math.ceil(shape.n_in / rf) if not shape.products else math.ceil(shape.n_in / shape.n_out / rf),
                   nonzero_weights=nonzero, resource=resource, outputs=shape.n_out * pf,
                   complex_multipliers=complex_, simple_multipliers=multipliers - complex_,
                   # a convolution's window is selected from its whole input (io_parallel) or its line buffer
                   elementwise_bits=shape.trips * shape.n_in * shape.input_width if shape.n_pixels > 1 else 0)
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
        if kind in ("activation", "softmax", "elementwise"):
            out["trips"] = max(1, shape.n_pixels)
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
    if first:
        ff["input_bits"] = (shape.in_elements or shape.n_in) * shape.input_width
    if kind == "mac":
        m, rf = s["multipliers"], max(1, shape.reuse_factor)
        if s["operands"] == "wide":
            dsp["wide_products_rf1" if rf == 1 else "wide_products_reused"] = s["complex_multipliers"] * s["tiles"]
            lut["shift_add_bits"] = s["simple_multipliers"] * s["product_width"]
        elif s["operands"] == "mixed":
            dsp["mixed_products"] = m
        lut["lut_product_bits"] = m * shape.weight_width * shape.input_width / 16.0
        lut["adder_bits"] = s["adders"] * s["accum_width"]
        # At RF > 1 each multiplier selects its weight among RF: the weights become LUT logic (or a ROM)
        lut["reused_weight_bits"] = ff["reused_weight_bits"] = (s["nonzero_weights"] * shape.weight_width
                                                                if rf > 1 else 0.0)
        ff["product_register_bits"] = m * s["product_width"]
        lut["elementwise_bits"] = ff["elementwise_bits"] = s["elementwise_bits"]
        ff["accumulator_bits"] = s["outputs"] * (s["accum_width"] + shape.result_width)
        cyc["mac_layers"] = 1.0
        cyc["adder_levels"] = _levels(s["depth_inputs"]) * REFERENCE_CLOCK_NS / clock_period_ns
        cyc["loop_cycles"] = (s["trips"] * rf) if (s["trips"] > 1 or rf > 1) else 0.0
    else:
        dsp["table_products"] = s.get("table_products", 0)
        lut["elementwise_bits"] = ff["elementwise_bits"] = s["elementwise_bits"]
        lut["dividers"] = ff["dividers"] = s.get("divider_bits", 0)
        lut["table_bits"] = s.get("table_bits", 0)
        lut["comparator_bits"] = s.get("comparator_bits", 0)
        ff["elementwise_bits"] += s.get("comparator_bits", 0)
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
                   backend: str = "Vitis", constants: dict | None = None, first: bool = False) -> dict:
    """DSP, LUT, FF, BRAM18, latency (cycles, ns) and II (cycles, ns) of one layer, with the backend's fitted
    constants (``calibration.calibrated``)."""
    if io_type not in ("io_parallel", "io_stream"):
        raise StageError(f"io_type {io_type!r} is not io_parallel or io_stream")
    if backend not in BACKENDS:
        raise StageError(f"no estimate for backend {backend!r}: calibrated for {', '.join(BACKENDS)}")
    theta = constants or _constants(backend)
    s = structure(shape, io_type)
    values = features(shape, io_type, clock_period_ns, first)
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


def first_layer(shapes: list[LayerShape]) -> int:
    """The index of the layer that reads the design's input (the first one with a cost)."""
    return next((i for i, s in enumerate(shapes) if kind_of(s) not in ("free", "unmodelled")), 0)


def design_features(shapes: list[LayerShape], io_type: str, clock_period_ns: float) -> dict[str, dict[str, float]]:
    """The design's features: each layer's, summed (what the calibration fits the constants on)."""
    total = {q: dict.fromkeys(FEATURES[q], 0.0) for q in QUANTITIES}
    first = first_layer(shapes)
    for index, shape in enumerate(shapes):
        for q, values in features(shape, io_type, clock_period_ns, index == first).items():
            for name, value in values.items():
                total[q][name] += value
    return total


def estimate(shapes: list[LayerShape], clock_period_ns: float, io_type: str = "io_parallel",
             backend: str = "Vitis") -> dict:
    """Per-layer estimates and their totals (resources and latency add up, the II is the slowest layer's), each
    total with its uncertainty: the fitted model's mean relative error on held-out synthesis reports."""
    from fpgaflow_converter.calibration import calibrated

    theta = calibrated(backend)
    first = first_layer(shapes)
    layers = [estimate_layer(s, clock_period_ns, io_type, backend, theta, i == first) for i, s in enumerate(shapes)]
    total = {key: sum(layer[key] for layer in layers) for key in ("dsp", "lut", "ff", "bram18", "latency_cycles")}
    total["latency_ns"] = total["latency_cycles"] * clock_period_ns
    total["ii_cycles"] = max((layer["ii_cycles"] for layer in layers), default=1)
    total["ii_ns"] = total["ii_cycles"] * clock_period_ns
    uncertainty = {q: theta["heldout_error"].get(q) for q in QUANTITIES}
    uncertainty["latency_ns"] = uncertainty["latency_cycles"]
    total["uncertainty"] = uncertainty
    unmodelled = [layer["name"] for layer in layers if not layer["modelled"]]
    model = (f"fpgaflow estimate calibrated on {theta['fit_rows']} {backend} HLS synthesis reports "
             f"(docs/estimates.md); held-out mean error DSP {_pct(uncertainty['dsp'])}, LUT {_pct(uncertainty['lut'])}, "
             f"FF {_pct(uncertainty['ff'])}, latency {_pct(uncertainty['latency_cycles'])}; not a synthesis report")
    model += f"; not modelled (counted as 0): {', '.join(unmodelled)}" if unmodelled else ""
    return {"layers": layers, "total": total, "model": model, "backend": backend, "clock_period_ns": clock_period_ns,
            "io_type": io_type, "shapes": [asdict(s) for s in shapes]}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def with_reuse(shapes: list[LayerShape], reuse_factor: int, strategy: str | None = None) -> list[LayerShape]:
    """The same layers at another reuse factor (and strategy) for every layer that multiplies."""
    return [replace(s, reuse_factor=reuse_factor, strategy=strategy or s.strategy) if kind_of(s) == "mac" else s
            for s in shapes]


# ---- from a design's layers (calibration rows, Keras files), as hls4ml would convert them ----------------

_MAC_NODES = {"dense": "Dense", "conv1d": "Conv1D", "conv2d": "Conv2D", "dwconv1d": "DepthwiseConv1D",
              "dwconv2d": "DepthwiseConv2D"}
_NODE_CLASSES = {"maxpool1d": "Pooling1D", "avgpool1d": "Pooling1D", "maxpool2d": "Pooling2D",
                 "avgpool2d": "Pooling2D", "gmaxpool1d": "GlobalPooling1D", "gavgpool1d": "GlobalPooling1D",
                 "gmaxpool2d": "GlobalPooling2D", "gavgpool2d": "GlobalPooling2D", "zeropad1d": "ZeroPadding1D",
                 "zeropad2d": "ZeroPadding2D", "upsample1d": "Resize", "upsample2d": "Resize", "flatten": "Reshape",
                 "bn": "BatchNormalization", "softmax": "Softmax"}


@dataclass(frozen=True)
class Settings:
    """What hls4ml's configuration sets for every layer of a design: types, reuse factor, strategy, io type,
    and the fraction of weights pruned to zero. ``weight``/``activation``/``input`` default to ``precision``."""

    precision: str = "ap_fixed<16,6>"
    weight: str = ""
    activation: str = ""
    input: str = ""
    accum: str = ""
    reuse_factor: int = 1
    strategy: str = "Latency"
    io_type: str = "io_parallel"
    pruned: float = 0.0


def shapes_from_nodes(nodes: list, settings: Settings,
                      weights: dict[str, tuple[int, int]] | None = None) -> list[LayerShape]:
    """The LayerShapes hls4ml's conversion of these layers (``calibration.designs.Node``) would give: a
    BatchNormalization after a Dense or a convolution folded into it, a separable convolution as its depthwise
    and pointwise parts, io_stream's explicit zero padding before a 'same' convolution. ``weights``: (zero,
    complex) weights by layer name, where known (else ``settings.pruned`` of each kernel is zero and
    TRAINED_COMPLEX_SHARE of the rest complex)."""
    data = parse_precision(settings.precision)
    weight = parse_precision(settings.weight or settings.precision)
    act = parse_precision(settings.activation or settings.precision)
    accum = parse_precision(settings.accum or settings.precision)
    stream = settings.io_type == "io_stream"
    strategy = "resource" if settings.strategy.lower().startswith("resource") else settings.strategy.lower()
    width, integer, signed = parse_precision(settings.input or settings.precision)
    shapes: list[LayerShape] = []

    def add(name, cls, n_in, n_out, result, **kw) -> None:
        nonlocal width, integer, signed
        shapes.append(LayerShape(name=name, class_name=cls, n_in=n_in, n_out=n_out, input_width=width,
                                 input_integer=integer, input_signed=signed, result_width=result[0],
                                 result_integer=result[1], in_elements=kw.pop("in_elements", current), **kw))
        width, integer, signed = result

    def mac(name, cls, node, n_in, n_out, products, in_pixels) -> None:
        pixels = math.prod(node.out_shape[:-1]) if cls != "Dense" else 1
        per_pixel = products or n_in * n_out
        known = (weights or {}).get(name)
        add(name, cls, n_in, n_out, data, weight_width=weight[0], weight_integer=weight[1],
            weight_signed=weight[2], bias_width=weight[0], bias_integer=weight[1], accum_width=accum[0],
            accum_integer=accum[1], reuse_factor=max(1, min(settings.reuse_factor, per_pixel)), strategy=strategy,
            n_zero_weights=known[0] if known else round(settings.pruned * per_pixel),
            complex_weights=known[1] if known else -1, n_pixels=pixels,
            trips=(in_pixels if stream else pixels) if cls != "Dense" else 1, products=products)

    previous = None
    current = 0
    for node in nodes[1:]:
        kind, name = node.kind, node.name
        current = math.prod(node.in_shape)
        channels = node.in_shape[-1]
        if kind == "bn" and previous in _MAC_NODES.values():
            continue  # folded into the layer before, as hls4ml does
        if kind in ("conv1d", "conv2d", "dwconv1d", "dwconv2d", "sepconv1d", "sepconv2d"):
            in_pixels = math.prod(node.in_shape[:-1])
            if stream and node.padding == "same":
                padded = tuple(n + node.kernel - 1 for n in node.in_shape[:-1])
                add(f"{name}_pad", f"ZeroPadding{node.dims}D", math.prod(node.in_shape), math.prod(padded) * channels,
                    (width, integer, signed), n_pixels=math.prod(padded))
                in_pixels = math.prod(padded)
            area = node.kernel ** node.dims
            if kind.startswith(("dw", "sep")):
                mac(f"{name}_depthwise" if kind.startswith("sep") else name, f"DepthwiseConv{node.dims}D", node,
                    area * channels, channels, area * channels, in_pixels)
            if kind.startswith("sep"):
                mac(f"{name}_pointwise", f"Conv{node.dims}D", node, channels, node.filters, 0,
                    math.prod(node.out_shape[:-1]))
            elif not kind.startswith("dw"):
                mac(name, f"Conv{node.dims}D", node, area * channels, node.filters, 0, in_pixels)
        elif kind == "dense":
            mac(name, "Dense", node, node.in_shape[0], node.filters, 0, 1)
        elif kind in _NODE_CLASSES and kind != "softmax":
            cls = _NODE_CLASSES[kind]
            if cls in POOL_CLASSES:
                window = node.kernel ** node.dims if not cls.startswith("Global") else math.prod(node.in_shape[:-1])
                pixels = math.prod(node.out_shape[:-1]) if not cls.startswith("Global") else 1
                divides = kind.startswith("avg") and node.padding == "same" and any(
                    n % node.kernel for n in node.in_shape[:-1])
                add(name, cls, window * channels, channels, data, n_pixels=pixels,
                    trips=math.prod(node.in_shape[:-1]) if stream else pixels,
                    activation="average_same" if divides else "average" if kind.startswith(("avg", "gavg")) else "max")
            else:
                n = math.prod(node.out_shape)
                add(name, cls, n, n, (width, integer, signed) if cls in FREE_CLASSES | {"ZeroPadding1D",
                    "ZeroPadding2D", "Resize"} else data, n_pixels=math.prod(node.out_shape[:-1]) if len(node.out_shape) > 1 else 1)
        elif kind == "softmax":
            n = math.prod(node.out_shape)
            add(name, "Softmax", n, n, data, activation="softmax")
        elif kind == "linear":
            continue
        else:  # the other activations
            n = math.prod(node.out_shape)
            add(name, "Activation", n, n, act, activation=kind,
                n_pixels=math.prod(node.out_shape[:-1]) if len(node.out_shape) > 1 else 1)
        previous = shapes[-1].class_name if shapes else None
    return shapes
