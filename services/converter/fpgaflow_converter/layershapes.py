"""The layers the estimate reads (``LayerShape``): from an hls4ml ModelGraph (the convert stage), or from a
design's layers as hls4ml would convert them (the calibration table's design lines, ``fpgaflow estimate``'s Keras
files), with the weights' facts the estimate needs (how many are zero, how many a DSP multiplies)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fpgaflow.errors import StageError

# A product by a constant weight (reuse factor 1: the weights are literals in the firmware) whose non-adjacent form
# has at most two nonzero signed digits is a shift and an add, which the HLS tools build in LUTs; the others get a
# DSP (lecun_uniform random weights have 94% such "complex" weights, and hls4ml's synthesized test layers use 56-63
# DSPs for 64 products).
COMPLEX_DIGITS = 3
TABLE_ACTIVATIONS = {"sigmoid", "tanh", "softsign", "softplus", "elu", "selu", "hard_tanh", "gelu"}
FREE_CLASSES = {"Input", "InputLayer", "Flatten", "Reshape", "Transpose", "Dropout"}
ACTIVATION_CLASSES = {"Activation", "ParametrizedActivation", "LeakyReLU", "ReLU", "ThresholdedReLU", "PReLU",
                      "ELU", "HardActivation", "UnaryLUT"}
MAC_CLASSES = {"Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D", "DepthwiseConv1D",
               "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D"}
POOL_CLASSES = {"Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D"}
ELEMENTWISE_CLASSES = {"BatchNormalization", "Merge", "ZeroPadding1D", "ZeroPadding2D", "Resize", "Concatenate"}
STRATEGIES = ("latency", "resource")

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
    weight_bits_used: int = 0  # the widest weight's significant bits with its sign (0: the weight type's width)


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
    facts = weight_facts(weight.data, ww, wi)
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
                      strategy=_strategy(layer), n_zero_weights=facts.zeros, complex_weights=facts.complex, weight_bits_used=facts.bits_used, n_pixels=pixels, trips=trips, products=products,
                      parallelization=int(layer.get_attr("parallelization_factor") or 1))


def _codes(weights, width: int, integer: int):
    """The integer codes of weights cast to ap_fixed<width, integer> (truncation toward minus infinity, ap_fixed's
    default; saturation is ignored)."""
    import numpy as np

    return np.floor(np.asarray(weights, dtype=float) * 2.0 ** (width - integer)).astype(np.int64)


def zero_weights(weights, width: int, integer: int) -> int:
    """Weights that are zero once cast to ap_fixed<width, integer>: the synthesis tool drops their products."""
    return weight_facts(weights, width, integer).zeros


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
    return weight_facts(weights, width, integer).complex


@dataclass(frozen=True)
class WeightFacts:
    """What the estimate needs of a kernel's values at its type: zero weights (no product), complex ones (a DSP
    at reuse factor 1) and the bits the widest needs (a constant operand is no wider than its value)."""

    zeros: int
    complex: int
    bits_used: int


def weight_facts(weights, width: int, integer: int) -> WeightFacts:
    codes = _codes(weights, width, integer)
    widest = int(abs(codes).max()) if codes.size else 0
    return WeightFacts(int((codes == 0).sum()), int((signed_digits(codes) >= COMPLEX_DIGITS).sum()),
                       min(width, widest.bit_length() + 1))


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


# ---- from a design's layers (calibration rows, Keras files), as hls4ml would convert them ----------------

_MAC_NODES = {"dense": "Dense", "conv1d": "Conv1D", "conv2d": "Conv2D", "dwconv1d": "DepthwiseConv1D",
              "dwconv2d": "DepthwiseConv2D"}
_NODE_CLASSES = {"maxpool1d": "Pooling1D", "avgpool1d": "Pooling1D", "maxpool2d": "Pooling2D",
                 "avgpool2d": "Pooling2D", "gmaxpool1d": "GlobalPooling1D", "gavgpool1d": "GlobalPooling1D",
                 "gmaxpool2d": "GlobalPooling2D", "gavgpool2d": "GlobalPooling2D", "zeropad1d": "ZeroPadding1D",
                 "zeropad2d": "ZeroPadding2D", "upsample1d": "Resize", "upsample2d": "Resize", "flatten": "Reshape",
                 "bn": "BatchNormalization", "softmax": "Softmax"}


def valid_reuse_factor(n_in: int, n_out: int, asked: int) -> int:
    """The reuse factor hls4ml's Vivado and Vitis backends use for a Resource-strategy layer of n_in x n_out
    products when ``asked`` is not one it accepts: the closest accepted one, the smaller on a tie. Accepted: RF
    divides n_in x n_out; below n_in, ceil(n_in x n_out / RF) is a multiple of n_out; from n_in up, a multiple
    of n_in."""
    total = n_in * n_out

    def accepted(rf: int) -> bool:
        if total % rf:
            return False
        if rf < n_in:
            return math.ceil(total / rf) % n_out == 0
        return rf % n_in == 0

    if accepted(asked):
        return asked
    return min((rf for rf in range(1, total + 1) if accepted(rf)), key=lambda rf: (abs(rf - asked), rf))


@dataclass(frozen=True)
class Settings:
    """What hls4ml's configuration sets for every layer of a design: types, reuse factor, strategy, io type,
    and the fraction of weights pruned to zero. ``weight``/``activation``/``input`` default to ``precision``."""

    precision: str = "ap_fixed<16,6>"
    weight: str = ""
    activation: str = ""
    input: str = ""
    accum: str = ""  # "": the default precision (hls4ml's 'model' granularity); "exact": wide enough for every sum
    reuse_factor: int = 1
    strategy: str = "Latency"
    io_type: str = "io_parallel"
    pruned: float = 0.0
    softmax_table_size: int = 1024  # hls4ml's default; fpgaflow's converter sets its own (config.SOFTMAX_TABLE_SIZE)


def shapes_from_nodes(nodes: list, settings: Settings,
                      weights: dict[str, WeightFacts] | None = None) -> list[LayerShape]:
    """The LayerShapes hls4ml's conversion of these layers (``calibration.designs.Node``) would give: a
    BatchNormalization after a Dense or a convolution folded into it, a separable convolution as its depthwise
    and pointwise parts, io_stream's explicit zero padding before a 'same' convolution. ``weights``: each
    layer's WeightFacts by name, where known (else ``settings.pruned`` of each kernel is zero and
    the estimate takes a trained model's usual share of complex weights)."""
    data = parse_precision(settings.precision)
    weight = parse_precision(settings.weight or settings.precision)
    act = parse_precision(settings.activation or settings.precision)
    exact = settings.accum == "exact"
    accum = (0, 0, True) if exact else parse_precision(settings.accum or settings.precision)
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
            weight_signed=weight[2], bias_width=weight[0], bias_integer=weight[1],
            # exact: hls4ml's 'auto' accumulator, the product's bits plus one per adder level and one for the bias
            accum_width=width + weight[0] + math.ceil(math.log2(max(2, n_in))) + 1 if exact else accum[0],
            accum_integer=integer + weight[1] + math.ceil(math.log2(max(2, n_in))) + 1 if exact else accum[1],
            reuse_factor=(valid_reuse_factor(n_in, n_out, settings.reuse_factor) if strategy == "resource"
                          and not products else max(1, min(settings.reuse_factor, per_pixel))), strategy=strategy,
            n_zero_weights=known.zeros if known else round(settings.pruned * per_pixel),
            complex_weights=known.complex if known else -1, weight_bits_used=known.bits_used if known else 0,
            n_pixels=pixels,
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
            add(name, "Softmax", n, n, data, activation="softmax", table_size=settings.softmax_table_size,
                n_pixels=math.prod(node.out_shape[:-1]) if len(node.out_shape) > 1 else 1)
        elif kind == "linear":
            continue
        else:  # the other activations
            n = math.prod(node.out_shape)
            add(name, "Activation", n, n, act, activation=kind,
                n_pixels=math.prod(node.out_shape[:-1]) if len(node.out_shape) > 1 else 1)
        previous = shapes[-1].class_name if shapes else None
    return shapes
