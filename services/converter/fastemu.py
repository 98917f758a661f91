"""A vectorized, bit-exact numpy emulator of hls4ml's C simulation (issue 7, first step).

hls4ml's compiled emulation (:mod:`fpgaflow.converter.emulator`) calls C once per sample. This module
computes the same bits for a whole batch at once: every ap_fixed value is held as its integer mantissa
(int64, or float64 holding an exact integer where a BLAS matmul is exact), and every cast applies the
target type's quantization (AP_TRN, AP_RND, ...) and overflow (AP_WRAP, AP_SAT, ...) modes the way
ap_types' ``ap_fixed_base`` does.

Covered: the input conversion from float, Dense (Latency strategy, io_parallel, plain products), ReLU
and the ``stable`` Softmax with its exp and 1/x tables, as hls4ml 1.3's Vivado/Vitis templates write
them. Anything else raises NotImplementedError naming it. Not wired into serving.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUANTIZATION_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV")
OVERFLOW_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM")
MAX_WIDTH = 62  # mantissas and their products live in int64


@dataclass(frozen=True)
class ApType:
    """ap_fixed<width, integer, Q, O, N> (signed) or ap_ufixed; ap_int/ap_uint are integer == width."""

    width: int
    integer: int
    signed: bool = True
    quantization: str = "AP_TRN"
    overflow: str = "AP_WRAP"
    saturation_bits: int = 0

    @property
    def fraction(self) -> int:
        return self.width - self.integer

    @property
    def min_mantissa(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_mantissa(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1


_TYPE = re.compile(r"^\s*ap_(u?)(fixed|int)\s*<\s*([^>]*)>\s*$")


def parse_type(text: str) -> ApType:
    """An ApType from its C++ spelling, e.g. ``ap_ufixed<18,3,AP_RND,AP_SAT,0>``."""
    match = _TYPE.match(text)
    if not match:
        raise NotImplementedError(f"type {text!r} is not an ap_fixed/ap_ufixed/ap_int/ap_uint type")
    unsigned, kind, args = match.groups()
    parts = [p.strip() for p in args.split(",") if p.strip()]
    width = int(parts[0])
    if kind == "int":
        if len(parts) != 1:
            raise NotImplementedError(f"type {text!r}: unexpected template arguments")
        integer, rest = width, []
    else:
        integer, rest = int(parts[1]), parts[2:]
    quantization = rest[0] if len(rest) > 0 else "AP_TRN"
    overflow = rest[1] if len(rest) > 1 else "AP_WRAP"
    saturation_bits = int(rest[2]) if len(rest) > 2 else 0
    t = ApType(width, integer, not unsigned, quantization, overflow, saturation_bits)
    check_type(t, text)
    return t


def check_type(t: ApType, name: str = "") -> None:
    label = name or repr(t)
    if t.quantization not in QUANTIZATION_MODES:
        raise NotImplementedError(f"type {label}: quantization mode {t.quantization} is not covered")
    if t.overflow not in OVERFLOW_MODES:
        raise NotImplementedError(f"type {label}: overflow mode {t.overflow} is not covered")
    if t.saturation_bits != 0:
        raise NotImplementedError(f"type {label}: saturation bits N={t.saturation_bits} (only N=0) are not covered")
    if not 1 <= t.width <= MAX_WIDTH:
        raise NotImplementedError(f"type {label}: width {t.width} is outside 1..{MAX_WIDTH}")


# ----------------------------------------------------------------------------------------------------
# quantization and overflow
# ----------------------------------------------------------------------------------------------------


def _round(floor, above_half, at_half, inexact, negative, mode: str):
    """The rounded mantissa given floor(value) and where the dropped part lies (ap_fixed's qb/r rules)."""
    if mode == "AP_TRN":
        return floor
    if mode == "AP_TRN_ZERO":
        return floor + (negative & inexact)
    if mode == "AP_RND":
        return floor + (above_half | at_half)
    if mode == "AP_RND_ZERO":
        return floor + (above_half | (at_half & negative))
    if mode == "AP_RND_MIN_INF":
        return floor + above_half
    if mode == "AP_RND_INF":
        return floor + (above_half | (at_half & ~negative))
    if mode == "AP_RND_CONV":
        return floor + (above_half | (at_half & ((floor % 2) == 1)))
    raise NotImplementedError(f"quantization mode {mode} is not covered")


def _overflow(m: np.ndarray, t: ApType) -> np.ndarray:
    """Mantissas (int64, already at t's fraction bits) brought into t's range by its overflow mode."""
    lo, hi = t.min_mantissa, t.max_mantissa
    if t.overflow == "AP_WRAP":
        return ((m - lo) & ((1 << t.width) - 1)) + lo
    if t.overflow == "AP_SAT":
        return np.clip(m, lo, hi)
    if t.overflow == "AP_SAT_SYM":
        return np.clip(m, -hi if t.signed else 0, hi)
    if t.overflow == "AP_SAT_ZERO":
        return np.where((m < lo) | (m > hi), 0, m)
    raise NotImplementedError(f"overflow mode {t.overflow} is not covered")


def requantize(m: np.ndarray, fraction: int, t: ApType) -> np.ndarray:
    """Cast integer mantissas with ``fraction`` fractional bits (exact values m * 2^-fraction) to type t."""
    m = np.asarray(m, dtype=np.int64)
    shift = fraction - t.fraction
    if shift <= 0:
        if int(np.abs(m).max(initial=0)).bit_length() - shift > 63:
            raise NotImplementedError(f"casting to {t}: the shifted mantissas do not fit in int64")
        return _overflow(m << -shift, t)
    if shift > 62:  # everything below one step: floor is 0 or -1
        floor = np.where(m < 0, -1, 0).astype(np.int64)
        negative = m < 0
        q = _round(floor, np.zeros_like(negative), np.zeros_like(negative), m != 0, negative, t.quantization)
        return _overflow(q, t)
    floor = m >> shift  # arithmetic shift: floor division by 2^shift
    rest = m - (floor << shift)
    half = np.int64(1) << (shift - 1)
    q = _round(floor, rest > half, rest == half, rest != 0, m < 0, t.quantization)
    return _overflow(q, t)


def quantize_float(x: np.ndarray, t: ApType) -> np.ndarray:
    """ap_fixed's constructor from float/double: the exact value, rounded and overflowed as t says.

    +-inf behave as ap_types does (a huge mantissa): saturated by the AP_SAT modes, 0 under AP_WRAP. NaN
    (which ap_types does not support) raises ValueError.
    """
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("NaN cannot be converted to an ap_fixed value")
    scaled = np.ldexp(x, t.fraction)  # exact: a power-of-two scale
    finite = np.isfinite(scaled)
    safe = np.where(finite, scaled, 0.0)
    floor = np.floor(safe)
    rest = safe - floor  # exact: both have the same exponent range
    negative = safe < 0
    limit = float(1 << MAX_WIDTH)
    big = np.abs(floor) >= limit
    if t.overflow == "AP_WRAP":
        # only the low `width` bits survive; fmod of an integer-valued double by 2^width is exact
        floor = np.where(big, np.fmod(floor, float(1 << t.width)), floor)
        q = _round(floor.astype(np.int64), rest > 0.5, rest == 0.5, rest != 0, negative, t.quantization)
        out = _overflow(q, t)
        return np.where(finite, out, 0)
    floor = np.clip(floor, -limit, limit)
    q = _round(floor.astype(np.int64), rest > 0.5, rest == 0.5, rest != 0, negative, t.quantization)
    q = np.where(finite, q, np.where(scaled > 0, 1 << MAX_WIDTH, -(1 << MAX_WIDTH)))
    return _overflow(q, t)


def to_float(m: np.ndarray, t: ApType) -> np.ndarray:
    """ap_fixed -> float as the bridge's output conversion does (exact for at most 24 significant bits)."""
    if t.width > 24:
        raise NotImplementedError(f"output type {t} is wider than a float's 24-bit significand")
    return np.ldexp(np.asarray(m, dtype=np.float64), -t.fraction).astype(np.float32)


def product_type(a: ApType, b: ApType) -> ApType:
    """The exact type of a * b (full precision, as ap_fixed's operator* returns)."""
    signed = a.signed or b.signed
    return ApType(a.width + b.width, a.integer + b.integer, signed)


# ----------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------


def _fits(t: ApType, inner: ApType) -> bool:
    """Whether every value of `inner` is exactly representable in t (no quantization, no overflow)."""
    if t.fraction < inner.fraction:
        return False
    shift = t.fraction - inner.fraction
    return (inner.min_mantissa << shift) >= t.min_mantissa and (inner.max_mantissa << shift) <= t.max_mantissa


def dense_latency(x: np.ndarray, x_type: ApType, w: np.ndarray, w_type: ApType, b: np.ndarray, b_type: ApType,
                  accum: ApType, result: ApType) -> np.ndarray:
    """nnet::dense_latency: products (x * w, exact) cast to accum, bias cast to accum, accumulate in input
    order with each sum cast to accum, then the result cast. x: (n, n_in) mantissas; w: (n_in, n_out)."""
    prod_t = product_type(x_type, w_type)
    n_in = w.shape[0]
    bias = requantize(b, b_type.fraction, accum)
    order_free = accum.overflow == "AP_WRAP"  # modular sums: the order of the additions does not matter
    if prod_t.width > 63:
        raise NotImplementedError(f"dense products of {x_type} and {w_type} are wider than int64")
    if _fits(accum, prod_t) and order_free:
        shift = accum.fraction - prod_t.fraction
        bound = n_in * (1 << (x_type.width + w_type.width)) << shift
        if bound < (1 << 53):  # every partial sum is an exact integer in float64: BLAS is exact
            acc = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64) << shift
        elif bound < (1 << 62):
            acc = (x @ w) << shift
        else:
            raise NotImplementedError(f"dense accumulation of {n_in} products of {x_type} and {w_type} overflows int64")
        return requantize(_overflow(acc + bias, accum), accum.fraction, result)
    acc = np.broadcast_to(bias, (len(x), len(bias))).copy()
    for i in range(n_in):  # the C loop's order; each product and each sum cast to accum
        product = requantize(x[:, i : i + 1] * w[i][None, :], prod_t.fraction, accum)
        acc = _overflow(acc + product, accum)
    return requantize(acc, accum.fraction, result)


def relu(x: np.ndarray, x_type: ApType, result: ApType) -> np.ndarray:
    """nnet::relu: the input cast to the result type where it is > 0, else 0."""
    return np.where(x > 0, requantize(x, x_type.fraction, result), 0)


def ceillog2(n: int) -> int:
    return int(n - 1).bit_length()


def table_index(m: np.ndarray, t: ApType, table_size: int) -> np.ndarray:
    """softmax_idx_from_real_val: the top ceillog2(table_size) bits of the two's complement mantissa."""
    n = ceillog2(table_size)
    if n > t.width:
        raise NotImplementedError(f"a {table_size}-entry table addressed by {t} (fewer bits than the address)")
    return (np.asarray(m, dtype=np.int64) & ((1 << t.width) - 1)) >> (t.width - n)


def table_address_values(t: ApType, table_size: int) -> np.ndarray:
    """softmax_real_val_from_idx for every index, as float32: the value whose top bits are the index."""
    n = ceillog2(table_size)
    raw = np.arange(table_size, dtype=np.int64) << (t.width - n)
    if t.signed:
        raw = np.where(raw >= (1 << (t.width - 1)), raw - (1 << t.width), raw)
    return np.ldexp(raw.astype(np.float64), -t.fraction).astype(np.float32)


def _libm_expf():
    path = ctypes.util.find_library("m")
    if path is None:
        return None
    fn = ctypes.CDLL(path).expf
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def expf(x: np.ndarray) -> np.ndarray:
    """std::exp(float) as the C simulation computes it: the C library's expf (numpy's as a fallback)."""
    fn = _libm_expf()
    x = np.asarray(x, dtype=np.float32)
    if fn is None:
        return np.exp(x)
    return np.array([fn(float(v)) for v in x], dtype=np.float32)


def exp_table(address: ApType, table: ApType, table_size: int, exp_scale: float, negative: bool) -> np.ndarray:
    """init_exp_table: exp(+-(address value * exp_scale)) in float, cast to the table type (mantissas)."""
    x = table_address_values(address, table_size) * np.float32(exp_scale)
    if negative:
        x = -x
    return quantize_float(expf(x), table)


def invert_table(address: ApType, table: ApType, table_size: int) -> np.ndarray:
    """init_invert_table: 1/x in float (inf at x = 0), cast to the table type (mantissas)."""
    with np.errstate(divide="ignore"):
        inv = np.float32(1) / table_address_values(address, table_size)
    return quantize_float(inv, table)


def tree_sum(columns: np.ndarray, t: ApType) -> np.ndarray:
    """nnet::reduce with Op_add<t> over the last axis: the same balanced tree, each sum cast to t."""
    n = columns.shape[-1]
    if n == 1:
        return columns[..., 0]
    if n == 2:
        return _overflow(columns[..., 0] + columns[..., 1], t)
    left = 1 << ((n - 1).bit_length() - 1)  # pow2(floorlog2(n - 1))
    return _overflow(tree_sum(columns[..., :left], t) + tree_sum(columns[..., left:], t), t)


@dataclass
class SoftmaxConfig:
    exp_table_size: int
    inv_table_size: int
    exp_scale: float
    exp_table_t: ApType
    inv_table_t: ApType
    accum_t: ApType
    inv_inp_t: ApType
    inp_norm_t: ApType
    implementation: str = "stable"

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        if self.implementation != "stable":
            raise NotImplementedError(f"softmax implementation {self.implementation!r} (only 'stable' is covered)")
        exp = exp_table(self.inp_norm_t, self.exp_table_t, self.exp_table_size, self.exp_scale, negative=True)
        inv = invert_table(self.inv_inp_t, self.inv_table_t, self.inv_table_size)
        return exp, inv


def softmax_stable(x: np.ndarray, x_type: ApType, result: ApType, cfg: SoftmaxConfig,
                   tables: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """nnet::softmax_stable over the last axis of x (mantissas of x_type)."""
    exp_tab, inv_tab = tables if tables is not None else cfg.tables()
    x_max = x.max(axis=-1, keepdims=True)
    diff = requantize(x_max - x, x_type.fraction, cfg.inp_norm_t)
    exp_res = requantize(exp_tab[table_index(diff, cfg.inp_norm_t, cfg.exp_table_size)],
                         cfg.exp_table_t.fraction, cfg.accum_t)
    exp_sum = requantize(tree_sum(exp_res, cfg.accum_t), cfg.accum_t.fraction, cfg.inv_inp_t)
    inv = inv_tab[table_index(exp_sum, cfg.inv_inp_t, cfg.inv_table_size)]
    if cfg.accum_t.width + cfg.inv_table_t.width > 63:
        raise NotImplementedError("softmax products wider than int64")
    return requantize(exp_res * inv[:, None], cfg.accum_t.fraction + cfg.inv_table_t.fraction, result)


# ----------------------------------------------------------------------------------------------------
# the network from the converter's artifact
# ----------------------------------------------------------------------------------------------------


@dataclass
class Layer:
    name: str
    kind: str  # dense | relu | softmax
    in_type: ApType
    out_type: ApType
    params: dict

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        if self.kind == "dense":
            return dense_latency(x, self.in_type, p["w"], p["weight_t"], p["b"], p["bias_t"], p["accum_t"], self.out_type)
        if self.kind == "relu":
            return relu(x, self.in_type, self.out_type)
        return softmax_stable(x, self.in_type, self.out_type, p["config"], p["tables"])


@dataclass
class FastEmulator:
    input_type: ApType
    layers: list[Layer]
    input_size: int
    output_size: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a batch of already-scaled inputs, (n, input_size) -> (n, output_size) float32,
        the same bits as :meth:`fpgaflow.converter.emulator.Emulator.predict`."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.input_size:
            raise ValueError(f"expected {self.input_size} values per sample, got {x.shape[1]}")
        m, t = quantize_float(x, self.input_type), self.input_type
        for layer in self.layers:
            m, t = layer(m), layer.out_type
        return to_float(m, t)


_TYPEDEF = re.compile(r"^\s*typedef\s+(.+?)\s+(\w+)\s*;", re.M)
_STRUCT = re.compile(r"struct\s+(\w+)\s*:\s*nnet::(\w+)\s*\{(.*?)\n\};", re.S)
_CONST = re.compile(r"static\s+(?:const|constexpr)\s+[\w:]+\s+(\w+)\s*=\s*([^;]+);")
_USING = re.compile(r"using\s+(\w+)\s*=\s*([\w:]+)")
_CALL = re.compile(r"^[ \t]*nnet::(\w+)<([^>]*)>\(([^)]*)\);[ \t]*//[ \t]*(\S+)", re.M)
_TOP = re.compile(r"void\s+(\w+)\s*\(\s*(\w+)\s+(\w+)\[(\d+)\]\s*,\s*(\w+)\s+(\w+)\[(\d+)\]\s*\)")


def parse_typedefs(text: str) -> dict[str, str]:
    return {name: spelling for spelling, name in _TYPEDEF.findall(text)}


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


def _require(cfg: dict, key: str, expected: str, what: str) -> None:
    if cfg.get(key) != expected:
        raise NotImplementedError(f"{what}: {key} = {cfg.get(key)} (only {expected} is covered)")


def _dense_layer(name, in_t, out_t, cfg, args, firmware, types) -> Layer:
    what = f"dense layer {name}"
    _require(cfg, "io_type", "nnet::io_parallel", what)
    _require(cfg, "strategy", "nnet::latency", what)
    _require(cfg, "kernel", "nnet::DenseLatency", what)
    _require(cfg, "product", "nnet::product::mult", what)
    if in_t.width == 1 and not in_t.signed and in_t.integer == 1:
        raise NotImplementedError(f"{what}: binary (ap_uint<1>) inputs")
    n_in, n_out = int(cfg["n_in"]), int(cfg["n_out"])
    weight_t, bias_t, accum_t = (parse_type(types[cfg[k]]) for k in ("weight_t", "bias_t", "accum_t"))
    w = read_weights(firmware / "weights" / f"{args[2]}.txt")
    b = read_weights(firmware / "weights" / f"{args[3]}.txt")
    if w.size != n_in * n_out or b.size != n_out:
        raise ValueError(f"{what}: weights of {w.size} and {b.size} values for {n_in}x{n_out}")
    params = {"w": quantize_float(w, weight_t).reshape(n_in, n_out), "weight_t": weight_t,
              "b": quantize_float(b, bias_t), "bias_t": bias_t, "accum_t": accum_t}
    return Layer(name, "dense", in_t, out_t, params)


def _softmax_layer(name, in_t, out_t, cfg, types) -> Layer:
    what = f"softmax layer {name}"
    _require(cfg, "io_type", "nnet::io_parallel", what)
    implementation = cfg.get("implementation", "").rsplit("::", 1)[-1]
    if implementation != "stable":
        raise NotImplementedError(f"{what}: implementation {implementation!r} (only 'stable' is covered)")
    if cfg.get("n_in") != cfg.get("n_slice") or cfg.get("n_outer", "1") != "1":
        raise NotImplementedError(f"{what}: a multi-dimensional softmax")
    scale = cfg.get("exp_scale", "1.0")
    config = SoftmaxConfig(
        int(cfg["exp_table_size"]), int(cfg["inv_table_size"]), float(np.float32(float(scale.rstrip("fF")))),
        *(parse_type(types[cfg[k]]) for k in ("exp_table_t", "inv_table_t", "accum_t", "inv_inp_t", "inp_norm_t")),
        implementation=implementation,
    )
    return Layer(name, "softmax", in_t, out_t, {"config": config, "tables": config.tables()})


def load_fast_emulator(convert_dir: str | Path) -> FastEmulator:
    """The network of a converted trial (``trial/convert``) from its hls4ml project's generated sources."""
    convert_dir = Path(convert_dir)
    project = "myproject"
    manifest = convert_dir / "emulator" / "emulator.json"
    if manifest.is_file():
        project = json.loads(manifest.read_text())["function"].removesuffix("_float")
    firmware = convert_dir / "hls4ml_prj" / "firmware"
    types = parse_typedefs((firmware / "defines.h").read_text())
    configs = parse_configs((firmware / "parameters.h").read_text())
    source = (firmware / f"{project}.cpp").read_text()
    top = _TOP.search(source)
    if top is None:
        raise NotImplementedError(f"{project}.cpp: a top function other than one input array and one output array")
    _, in_type_name, current, in_size, out_type_name, out_name, out_size = top.groups()
    input_type = parse_type(types[in_type_name])
    layers, current_type = [], input_type
    for function, template, call_args, name in _CALL.findall(source):
        targs = [a.strip() for a in template.split(",")]
        args = [a.strip() for a in call_args.split(",")]
        if args[0] != current:
            raise NotImplementedError(f"layer {name} reads {args[0]}, not the previous output {current}: "
                                      "only sequential networks are covered")
        in_t, out_t = parse_type(types[targs[0]]), parse_type(types[targs[1]])
        if in_t != current_type:
            raise ValueError(f"layer {name}: input type {in_t} differs from the previous output type {current_type}")
        cfg = configs.get(targs[-1], {})
        if function == "dense":
            layers.append(_dense_layer(name, in_t, out_t, cfg, args, firmware, types))
        elif function == "relu":
            layers.append(Layer(name, "relu", in_t, out_t, {}))
        elif function == "softmax":
            layers.append(_softmax_layer(name, in_t, out_t, cfg, types))
        else:
            raise NotImplementedError(f"layer {name}: nnet::{function} is not covered (dense, relu, softmax are)")
        current, current_type = args[1], out_t
    if current != out_name:
        raise ValueError(f"the last layer writes {current}, not the top function's output {out_name}")
    return FastEmulator(input_type, layers, int(in_size), int(out_size))
