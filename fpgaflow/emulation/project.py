"""A converted hls4ml project read into a :class:`~fpgaflow.emulation.fastemu.FastEmulator`: the top function's
calls (``firmware/<project>.cpp``), their types (``defines.h``), configurations (``parameters.h``) and weights
(``firmware/weights``), and the input and output sizes from the C simulation's bridge."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpgaflow.emulation.apfixed import ApType, Range, parse_type, quantize_float
from fpgaflow.emulation.fastemu import (
    FastEmulator,
    Layer,
    SoftmaxConfig,
    dense_layer,
    linear_layer,
    relu_layer,
    softmax_layer,
)
from fpgaflow.emulation.imagelayers import (
    Window,
    add_layer,
    conv_layer,
    normalize_layer,
    pool_layer,
    zeropad_layer,
)

__all__ = ["load_fast_emulator", "load_project"]

_TYPEDEF = re.compile(r"^\s*typedef\s+(.+?)\s+(\w+)\s*;", re.M)
_STRUCT = re.compile(r"struct\s+(\w+)\s*:\s*nnet::(\w+)\s*\{(.*?)\n\};", re.S)
_CONST = re.compile(r"static\s+(?:const|constexpr)\s+[\w:]+\s+(\w+)\s*=\s*([^;]+);")
_USING = re.compile(r"using\s+(\w+)\s*=\s*([\w:]+)")
_CALL = re.compile(r"^[ \t]*nnet::(\w+)<([^>]*)>\(([^)]*)\);[ \t]*//[ \t]*(\S+)", re.M)
_ALIAS = re.compile(r"^[ \t]*auto\s*&\s*(\w+)\s*=\s*(\w+)\s*;", re.M)
_TOP = re.compile(r"void\s+(\w+)\s*\(\s*(\w+)\s+(\w+)\[([\d\s*]+)\]\s*,\s*(\w+)\s+(\w+)\[([\d\s*]+)\]\s*\)")
_TOP_STREAM = re.compile(r"void\s+(\w+)\s*\(\s*hls::stream<(\w+)>\s*&\s*(\w+)\s*,\s*hls::stream<(\w+)>\s*&\s*(\w+)\s*\)")
_BRIDGE_IN = re.compile(r"nnet::convert_data<float,\s*\w+,\s*([\d\s*]+)>")
_BRIDGE_OUT = re.compile(r"nnet::convert_data<\w+,\s*float,\s*([\d\s*]+)>")
_ARRAY = re.compile(r"^\s*nnet::array<\s*(.+?)\s*,\s*([\d\s*]+)>\s*$")
IO_TYPES = ("nnet::io_parallel", "nnet::io_stream")  # io_stream: the same kernels on packed arrays


def _product(text: str) -> int:
    """An integer constant as hls4ml writes it: ``16`` or ``8*8*4``."""
    return int(np.prod([int(f) for f in text.split("*")]))


def parse_typedefs(text: str) -> dict[str, str]:
    """defines.h's types by name; an io_stream design's packed ``nnet::array<T, N>`` stands for its element T
    (its layers compute on T, whatever the packing: see :func:`array_sizes`)."""
    types = {}
    for spelling, name in _TYPEDEF.findall(text):
        packed = _ARRAY.match(spelling)
        types[name] = packed.group(1) if packed else spelling
    return types


def array_sizes(text: str) -> dict[str, int]:
    """The element counts of defines.h's packed ``nnet::array<T, N>`` types, by name."""
    sizes = {}
    for spelling, name in _TYPEDEF.findall(text):
        packed = _ARRAY.match(spelling)
        if packed:
            sizes[name] = _product(packed.group(2))
    return sizes


def parse_configs(text: str) -> dict[str, dict]:
    """parameters.h's config structs: {name: {"base": ..., constants, typedefs, usings}}."""
    configs = {}
    for name, base, body in _STRUCT.findall(text):
        cfg = {"base": base}
        cfg.update({k: v.strip() for k, v in _CONST.findall(body)})
        cfg.update({k: v for v, k in _TYPEDEF.findall(body)})
        cfg.update(_USING.findall(body))
        configs[name] = cfg
    return configs


def read_weights(path: Path) -> np.ndarray:
    """A weights/*.txt file (one line of comma-separated decimals, parsed as double like the C simulation)."""
    line = path.read_text().splitlines()[0]
    return np.array([float(v) for v in line.split(",") if v.strip()], dtype=np.float64)


@dataclass(frozen=True)
class Top:
    """The top function's input and output arrays (or streams), their types and their values per sample."""

    in_type: str
    in_name: str
    in_size: int
    out_type: str
    out_name: str
    out_size: int


def _top(source: str, bridge: str, project: str) -> Top:
    """The top function's signature, with the sizes its C simulation's bridge converts (io_stream's streams
    carry packs, so their sizes are only in the bridge)."""
    found_in, found_out = _BRIDGE_IN.search(bridge), _BRIDGE_OUT.search(bridge)
    top = _TOP.search(source)
    if top is not None:
        _, in_type, in_name, in_size, out_type, out_name, out_size = top.groups()
        return Top(in_type, in_name, _product(in_size), out_type, out_name, _product(out_size))
    top = _TOP_STREAM.search(source)
    if top is not None and found_in and found_out:
        _, in_type, in_name, out_type, out_name = top.groups()
        return Top(in_type, in_name, _product(found_in.group(1)), out_type, out_name, _product(found_out.group(1)))
    raise NotImplementedError(f"{project}.cpp: a top function other than one input and one output (arrays, or "
                              "streams with the C simulation's bridge)")


def _require(cfg: dict, key: str, allowed: tuple[str, ...], what: str) -> str:
    value = cfg.get(key)
    if value not in allowed:
        raise NotImplementedError(f"{what}: {key} = {value} (only {', '.join(allowed)} covered)")
    return value


DENSE_KERNELS = {"nnet::latency": ("nnet::DenseLatency",),
                 "nnet::resource": ("nnet::DenseResource_rf_leq_nin", "nnet::DenseResource_rf_gt_nin_rem0")}


@dataclass
class Reader:
    """What a layer's builder reads: the project's types, configs and weights, and each array's type and range."""

    firmware: Path
    types: dict[str, str]
    sizes: dict[str, int]
    configs: dict[str, dict]
    stream: bool

    def type(self, name: str) -> ApType:
        """A type by its typedef's name, or as spelled where a config names it directly."""
        return parse_type(self.types.get(name, name))

    def weights(self, name: str, t: ApType) -> np.ndarray:
        return quantize_float(read_weights(self.firmware / "weights" / f"{name}.txt"), t)


@dataclass(frozen=True)
class Call:
    """One call of the top function: ``nnet::function<template args>(args); // name``."""

    function: str
    targs: list[str]
    args: list[str]
    name: str

    def config(self, reader: Reader) -> dict:
        return reader.configs.get(self.targs[-1], {})


def _multiplications(call: Call, reader: Reader, cfg: dict, n_in: int, n_out: int, what: str):
    """A dense or convolution layer's weights (n_in, n_out) and biases as mantissas, with their types, its
    accumulator and its strategy, from the config of its multiplications."""
    _require(cfg, "strategy", tuple(DENSE_KERNELS), what)
    mult = reader.configs.get(cfg.get("mult_config", ""), cfg)
    _require(mult, "kernel", DENSE_KERNELS[cfg["strategy"]], what)
    _require(mult, "product", ("nnet::product::mult",), what)
    weight_t, bias_t, accum_t = (reader.type(cfg[k]) for k in ("weight_t", "bias_t", "accum_t"))
    w = reader.weights(call.args[2], weight_t)
    b = reader.weights(call.args[3], bias_t)
    if w.size != n_in * n_out or b.size != n_out:
        raise ValueError(f"{what}: weights of {w.size} and {b.size} values for {n_in}x{n_out}")
    # hls4ml transposes a Resource-strategy layer's weights (ApplyResourceStrategy): n_out rows of n_in
    w = w.reshape(n_out, n_in).T if cfg["strategy"] == "nnet::resource" else w.reshape(n_in, n_out)
    return np.ascontiguousarray(w), weight_t, b, bias_t, accum_t, cfg["strategy"].removeprefix("nnet::")


def _dense(call, reader, ranges, in_t, out_t) -> Layer:
    what, cfg = f"dense layer {call.name}", call.config(reader)
    _require(cfg, "io_type", IO_TYPES, what)
    if in_t.width == 1 and not in_t.signed and in_t.integer == 1:
        raise NotImplementedError(f"{what}: binary (ap_uint<1>) inputs")
    w, w_t, b, b_t, accum, strategy = _multiplications(call, reader, cfg, int(cfg["n_in"]), int(cfg["n_out"]), what)
    return dense_layer(call.name, ranges[0], in_t, w, w_t, b, b_t, accum, out_t, strategy)


def _constant(cfg: dict, key: str) -> int:
    """A config's integer constant: ``16``, ``8*8*4``, or another constant's name (``n_chan = n_filt``)."""
    factors = [_constant(cfg, f.strip()) if f.strip() in cfg else int(f) for f in cfg[key].split("*")]
    return int(np.prod(factors))


def _window(cfg: dict, two_d: bool, kernel: tuple[str, str] = ("", "")) -> Window:
    """A convolution's, pooling's or padding's geometry from its config (1-D layers: one row; a padding's window
    is one pixel)."""
    def get(key, default=0):
        return _constant(cfg, key) if key in cfg else default

    if two_d:
        return Window(get("in_height"), get("in_width"), get("n_chan") or get("n_filt"), get(kernel[0], 1), get(kernel[1], 1),
                      get("stride_height", 1), get("stride_width", 1), get("out_height"), get("out_width"),
                      get("pad_top"), get("pad_bottom"), get("pad_left"), get("pad_right"))
    return Window(1, get("in_width") or get("n_in"), get("n_chan") or get("n_filt"), 1, get(kernel[1], 1),
                  1, get("stride_width", 1), 1, get("out_width") or get("n_out"), 0, 0, get("pad_left"), get("pad_right"))


def _conv(call, reader, ranges, in_t, out_t) -> Layer:
    what, cfg = f"convolution {call.name}", call.config(reader)
    if any(key in cfg and _constant(cfg, key) != 1 for key in ("dilation_height", "dilation_width")):
        raise NotImplementedError(f"{what}: dilation")
    window = _window(cfg, "2d" in call.function, ("filt_height", "filt_width"))
    n_in, n_out = window.kh * window.kw * window.chan, _constant(cfg, "n_filt")
    w, w_t, b, b_t, accum, strategy = _multiplications(call, reader, cfg, n_in, n_out, what)
    return conv_layer(call.name, ranges[0], in_t, w, w_t, b, b_t, accum, out_t, strategy, window)


def _pool(call, reader, ranges, in_t, out_t) -> Layer:
    cfg = call.config(reader)
    window = _window(cfg, "2d" in call.function, ("pool_height", "pool_width"))
    op = cfg.get("pool_op", "").removeprefix("nnet::")
    return pool_layer(call.name, ranges[0], in_t, reader.type(cfg["accum_t"]), out_t, window, op, reader.stream)


def _zeropad(call, reader, ranges, in_t, out_t) -> Layer:
    cfg = call.config(reader)
    return zeropad_layer(call.name, ranges[0], in_t, out_t, _window(cfg, "2d" in call.function))


def _add(call, reader, ranges, in_t, out_t) -> Layer:
    cfg = call.config(reader)
    if cfg.get("n_elem1") != cfg.get("n_elem2"):
        raise NotImplementedError(f"add layer {call.name}: inputs of different sizes (broadcast)")
    return add_layer(call.name, ranges[0], in_t, ranges[1], reader.type(call.targs[1]), out_t)


def _normalize(call, reader, ranges, in_t, out_t) -> Layer:
    what, cfg = f"batch normalization {call.name}", call.config(reader)
    _require(cfg, "product", ("nnet::product::mult",), what)
    s_t, b_t = reader.type(cfg["scale_t"]), reader.type(cfg["bias_t"])
    scale, bias = reader.weights(call.args[2], s_t), reader.weights(call.args[3], b_t)
    n_filt = int(cfg.get("n_filt", "-1"))
    if len(scale) != (n_filt if n_filt > 0 else _constant(cfg, "n_in")):
        raise ValueError(f"{what}: {len(scale)} scales for n_filt {n_filt}")
    return normalize_layer(call.name, ranges[0], in_t, scale, s_t, bias, b_t, out_t)


def _activation(call, reader, ranges, in_t, out_t) -> Layer:
    _require(call.config(reader), "io_type", IO_TYPES, f"{call.function} layer {call.name}")
    builder = relu_layer if call.function == "relu" else linear_layer
    return builder(call.name, ranges[0], in_t, out_t)


def _softmax(call, reader, ranges, in_t, out_t) -> Layer:
    what, cfg = f"softmax layer {call.name}", call.config(reader)
    _require(cfg, "io_type", IO_TYPES, what)
    if reader.sizes.get(call.targs[0], int(cfg.get("n_in", 0))) != int(cfg.get("n_in", 0)):
        raise NotImplementedError(f"{what}: its input comes in several packs (io_stream), each with its own softmax")
    implementation = cfg.get("implementation", "").rsplit("::", 1)[-1]
    if implementation != "stable":
        raise NotImplementedError(f"{what}: implementation {implementation!r} (only 'stable' is covered)")
    if cfg.get("n_in") != cfg.get("n_slice") or cfg.get("n_outer", "1") != "1":
        raise NotImplementedError(f"{what}: a multi-dimensional softmax")
    scale = cfg.get("exp_scale", "1.0")
    exp_table_t, inv_table_t, accum_t, inv_inp_t, inp_norm_t = (
        reader.type(cfg[k]) for k in ("exp_table_t", "inv_table_t", "accum_t", "inv_inp_t", "inp_norm_t"))
    config = SoftmaxConfig(
        int(cfg["exp_table_size"]), int(cfg["inv_table_size"]), float(np.float32(float(scale.rstrip("fF")))),
        exp_table_t, inv_table_t, accum_t, inv_inp_t, inp_norm_t, implementation=implementation,
    )
    return softmax_layer(call.name, ranges[0], in_t, out_t, config, int(cfg["n_in"]))


def _repack(call, reader, ranges, in_t, out_t) -> Layer:
    """nnet::repack_stream: the same values in packs of another size; the cast its assignment makes."""
    return linear_layer(call.name, ranges[0], in_t, out_t)


Builder = Callable[[Call, Reader, list[Range], ApType, ApType], Layer]
# nnet function -> (builder, how many of its arguments are inputs); clone_stream is read as aliases
BUILDERS: dict[str, tuple[Builder, int]] = {
    "dense": (_dense, 1), "relu": (_activation, 1), "linear": (_activation, 1), "softmax": (_softmax, 1),
    "conv_1d_cl": (_conv, 1), "conv_2d_cl": (_conv, 1), "pointwise_conv_1d_cl": (_conv, 1),
    "pointwise_conv_2d_cl": (_conv, 1), "pooling1d_cl": (_pool, 1), "pooling2d_cl": (_pool, 1),
    "zeropad1d_cl": (_zeropad, 1), "zeropad2d_cl": (_zeropad, 1), "add": (_add, 2), "normalize": (_normalize, 1),
    "repack_stream": (_repack, 1),
}


def load_fast_emulator(convert_dir: str | Path) -> FastEmulator:
    """The network of a converted trial (``trial/convert``) from its hls4ml project's generated sources."""
    convert_dir = Path(convert_dir)
    project = "myproject"
    manifest = convert_dir / "emulator" / "emulator.json"
    if manifest.is_file():
        project = json.loads(manifest.read_text())["function"].removesuffix("_float")
    return load_project(convert_dir / "hls4ml_prj", project)


def load_project(project_dir: str | Path, project: str = "myproject") -> FastEmulator:
    """The network of an hls4ml project folder (as ``hls_model.write()`` leaves it)."""
    project_dir = Path(project_dir)
    firmware = project_dir / "firmware"
    defines = (firmware / "defines.h").read_text()
    source = (firmware / f"{project}.cpp").read_text()
    bridge_path = project_dir / f"{project}_bridge.cpp"
    top = _top(source, bridge_path.read_text() if bridge_path.is_file() else "", project)
    stream = _TOP_STREAM.search(source) is not None
    reader = Reader(firmware, parse_typedefs(defines), array_sizes(defines),
                    parse_configs((firmware / "parameters.h").read_text()), stream)
    aliases = dict(_ALIAS.findall(source))

    def resolve(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    input_type = reader.type(top.in_type)
    known = {top.in_name: (input_type, Range.of(input_type))}  # array -> its type and static range
    layers = []
    for function, template, call_args, name in _CALL.findall(source):
        call = Call(function, [a.strip() for a in template.split(",")], [resolve(a.strip()) for a in call_args.split(",")],
                    name)
        if function == "clone_stream":  # copies of one stream: the same array under each name
            for copy in call.args[1:]:
                aliases[copy] = call.args[0]
            continue
        if function not in BUILDERS:
            raise NotImplementedError(f"layer {name}: nnet::{function} is not covered "
                                      f"({', '.join(sorted(BUILDERS))} and clone_stream are)")
        builder, n_inputs = BUILDERS[function]
        inputs, output = call.args[:n_inputs], call.args[n_inputs]
        for position, array in enumerate(inputs):
            if array not in known:
                raise NotImplementedError(f"layer {name} reads {array}, which no earlier layer writes")
            declared = reader.type(call.targs[position])
            if declared != known[array][0]:
                raise ValueError(f"layer {name}: input type {declared} differs from {array}'s type {known[array][0]}")
        in_t, out_t = known[inputs[0]][0], reader.type(call.targs[n_inputs])
        layer = builder(call, reader, [known[a][1] for a in inputs], in_t, out_t)
        layer.inputs, layer.output = tuple(inputs), output
        layers.append(layer)
        known[output] = (out_t, layer.out_range)
    out_name = resolve(top.out_name)
    if out_name not in known or (layers and layers[-1].output != out_name):
        raise ValueError(f"the last layer writes {layers[-1].output if layers else top.in_name}, not the top "
                         f"function's output {top.out_name}")
    return FastEmulator(input_type, layers, top.in_size, top.out_size, top.in_name, out_name)
