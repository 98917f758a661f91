"""A vectorized, bit-exact numpy emulator of hls4ml's C simulation (issue 7).

hls4ml's compiled emulation (:mod:`fpgaflow.emulation.library`) calls C once per sample. This module
computes the same bits for a whole batch at once, from the converted project's own headers and weights:
every ap_fixed value is held as its integer mantissa, and every cast applies the target type's
quantization and overflow modes the way ap_types does (:mod:`fpgaflow.emulation.apfixed`).

Each layer has two implementations:

- the **fast path** on float64 mantissas, used where a static range analysis (types, weights, the
  previous layers' ranges) proves every value and partial sum below 2^52: a dense layer is then one
  exact BLAS product with the bias and the result scale folded into the weights, and a cast is only the
  passes it needs (no rounding where no bits drop, no overflow pass where the range cannot leave the type);
- the **exact path** on int64 mantissas, used otherwise: wider types, accumulators that saturate in an
  order-dependent way (added in the C loop's order), products rounded to a coarser accumulator.

This module holds the dense kernels, the activations and the network (:class:`FastEmulator`, a graph of
named arrays, so that residual networks branch and merge); :mod:`fpgaflow.emulation.imagelayers` adds the
image layers (convolutions as the same exact matrix products on im2col rows, padding, pooling, batch
normalization, the residual add), and :mod:`fpgaflow.emulation.project` reads a converted hls4ml project into
a network. Anything not covered raises NotImplementedError naming it, and the caller falls back to hls4ml's
compiled library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fpgaflow.emulation.apfixed import (
    FLOAT_EXACT,
    OVERFLOW_MODES,
    QUANTIZATION_MODES,
    ApType,
    FloatCast,
    Range,
    _overflow,
    fits,
    overflow_float,
    parse_type,
    product_type,
    quantize_float,
    quantize_float64,
    requantize,
    to_float,
)

CHUNK = 1024  # rows per block of a large batch (measured: 1024 is 1.5x faster than one block of 10,000)

__all__ = ["OVERFLOW_MODES", "QUANTIZATION_MODES", "ApType", "FastEmulator", "parse_type",
           "quantize_float", "requantize"]

# ----------------------------------------------------------------------------------------------------
# the exact path: int64 mantissas
# ----------------------------------------------------------------------------------------------------


def dense_latency(x: np.ndarray, x_type: ApType, w: np.ndarray, w_type: ApType, b: np.ndarray, b_type: ApType,
                  accum: ApType, result: ApType, order_free: bool | None = None) -> np.ndarray:
    """nnet::dense_latency on int64 mantissas: products (x * w, exact) cast to accum, bias cast to accum,
    accumulate in input order with each sum cast to accum, then the result cast. x: (n, n_in); w: (n_in, n_out).

    ``order_free``: the caller has proved that no partial sum leaves accum's range (or accum wraps, when
    modular sums make the order irrelevant, the default), so one matrix product gives the same sums."""
    prod_t = product_type(x_type, w_type)
    n_in = w.shape[0]
    bias = requantize(b, b_type.fraction, accum)
    if order_free is None:
        order_free = accum.overflow == "AP_WRAP"
    if prod_t.width > 63:
        raise NotImplementedError(f"dense products of {x_type} and {w_type} are wider than int64")
    if fits(accum, prod_t) and order_free:
        shift = accum.fraction - prod_t.fraction
        if n_in * (1 << (x_type.width + w_type.width)) << shift >= 1 << 62:  # numpy's integer matmul wraps silently
            raise NotImplementedError(f"dense accumulation of {n_in} products of {x_type} and {w_type} overflows int64")
        acc = (x @ w) << shift  # (where float64 is exact, the fast path's BLAS product serves instead)
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
# the fast path: float64 mantissas, planned from static ranges
# ----------------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """One layer: the exact (int64) implementation always, the fast (float64) one where it is proved exact.
    A layer reads the arrays named ``inputs`` (one, or two for a merge) and writes the one named ``output``;
    arrays are (samples, values) mantissas, an image's values in hls4ml's order (row, column, channel). A layer
    may reuse its input array's memory for its output (the emulator hands it a copy where another layer reads
    that input later). ``work``: the values per sample it holds at once (an im2col buffer), which sizes the
    emulator's blocks."""

    name: str
    kind: str
    in_type: ApType
    out_type: ApType
    out_range: Range
    exact: Callable[..., np.ndarray]
    fast: Callable[..., np.ndarray] | None = None
    why_exact: str = ""  # why the fast path is not used, when it is not
    inputs: tuple[str, ...] = ()
    output: str = ""
    work: int = 0

    def __call__(self, *ms: np.ndarray) -> np.ndarray:
        if self.fast is not None:
            return self.fast(*(m if m.dtype == np.float64 else m.astype(np.float64) for m in ms))
        return self.exact(*(m if m.dtype == np.int64 else m.astype(np.int64) for m in ms))


@dataclass(frozen=True)
class DenseAnalysis:
    """What the weights and the input range prove about a dense layer's sums (in accum units)."""

    final: Range  # the exact sums before any accum overflow
    magnitude: int  # the largest |partial sum|, summing |terms|
    products_fit: bool  # each product is exact in accum (no rounding, no overflow of its own)
    partial_in_range: bool  # no partial sum, bias first, in any order, leaves accum's range

    @property
    def order_free(self) -> bool:
        """Whether the order of the additions cannot change the result (no saturation can happen)."""
        return self.products_fit and self.partial_in_range


def analyse_dense(x: Range, x_t: ApType, w: np.ndarray, w_t: ApType, bias_acc: np.ndarray, accum: ApType) -> DenseAnalysis:
    prod_t = product_type(x_t, w_t)
    shift = accum.fraction - prod_t.fraction
    if shift < 0:  # products are rounded to the accumulator: no exact matrix product
        return DenseAnalysis(Range.of(accum), 1 << 62, False, False)
    wo = w.astype(object)  # Python integers: no overflow in the analysis
    high = np.maximum(wo * x.lo, wo * x.hi) << shift
    low = np.minimum(wo * x.lo, wo * x.hi) << shift
    bias = bias_acc.astype(object)
    final = Range(int((low.sum(axis=0) + bias).min()), int((high.sum(axis=0) + bias).max()))
    partial = Range(int((np.minimum(low, 0).sum(axis=0) + np.minimum(bias, 0)).min()),
                    int((np.maximum(high, 0).sum(axis=0) + np.maximum(bias, 0)).max()))
    magnitude = int((np.abs(wo).sum(axis=0) * (x.magnitude << shift) + np.abs(bias)).max())
    single = Range(int(low.min()), int(high.max()))
    return DenseAnalysis(final, magnitude, single.within(accum), partial.within(accum))


def dense_layer(name: str, x_range: Range, x_t: ApType, w: np.ndarray, w_t: ApType, b: np.ndarray, b_t: ApType,
                accum: ApType, result: ApType, strategy: str) -> Layer:
    """nnet::dense (w: (n_in, n_out) mantissas, b: (n_out,)). The Latency strategy adds products in input
    order, Resource in its reuse order: only a saturating accumulator that can saturate tells them apart."""
    what = f"dense layer {name}"
    bias_acc = requantize(b, b_t.fraction, accum)
    facts = analyse_dense(x_range, x_t, w, w_t, bias_acc, accum)
    modular = accum.overflow == "AP_WRAP"
    order_free = facts.order_free or modular
    if not order_free and strategy != "latency":
        raise NotImplementedError(f"{what}: the {strategy} strategy with accumulator {accum}, which may saturate "
                                  "(its order of additions is not emulated)")

    def exact(m):
        return dense_latency(m, x_t, w, w_t, b, b_t, accum, result, order_free=order_free)

    overflow_at_accum = not facts.final.within(accum)
    out_range = FloatCast.plan(accum.fraction, Range.of(accum) if overflow_at_accum else facts.final, result).out
    layer = Layer(name, "dense", x_t, result, out_range, exact)
    if accum.fraction < product_type(x_t, w_t).fraction:
        layer.why_exact = "products are rounded to the accumulator"
    elif not order_free:
        layer.why_exact = "the accumulator may saturate: added in the C loop's order"
    elif facts.magnitude >= FLOAT_EXACT or x_range.magnitude >= FLOAT_EXACT:
        layer.why_exact = "sums reach 2^52"
    else:
        layer.fast = _fast_dense(w, bias_acc, product_type(x_t, w_t), accum, result, facts, overflow_at_accum)
    return layer


def _fast_dense(w, bias_acc, prod_t: ApType, accum: ApType, result: ApType, facts: DenseAnalysis,
                overflow_at_accum: bool):
    to_accum = 2.0 ** (accum.fraction - prod_t.fraction)
    if overflow_at_accum:  # a wrapping accumulator that can wrap: wrap in accum units, then cast
        cast = FloatCast.plan(accum.fraction, Range.of(accum), result)
        scale = 1.0

        def finish(acc):
            return cast(overflow_float(acc, accum), inplace=True)
    else:  # the result's power-of-two scale folded into the weights and bias: still exact
        cast = FloatCast.plan(accum.fraction, facts.final, result)
        scale = cast.scale

        def finish(acc):
            return cast(acc, scaled=True, inplace=True)
    weights, bias = w.astype(np.float64) * (to_accum * scale), bias_acc.astype(np.float64) * scale

    def fast(x):
        acc = x @ weights
        acc += bias
        return finish(acc)
    return fast


def relu_layer(name: str, x_range: Range, x_t: ApType, result: ApType) -> Layer:
    positive = Range(max(x_range.lo, 1), max(x_range.hi, 1))
    cast = FloatCast.plan(x_t.fraction, positive, result)
    out = cast.out.union(Range(0, 0))
    layer = Layer(name, "relu", x_t, result, out, lambda m: relu(m, x_t, result))
    if cast.scale == 1.0 and not cast.rounds and not cast.overflows:
        layer.fast = lambda v: np.maximum(v, 0.0, out=v)  # v is the previous layer's own output
    else:
        layer.fast = lambda v: np.where(v > 0, cast(v), 0.0)
    return layer


def linear_layer(name: str, x_range: Range, x_t: ApType, result: ApType) -> Layer:
    """nnet::linear: a cast to the result type."""
    cast = FloatCast.plan(x_t.fraction, x_range, result)
    return Layer(name, "linear", x_t, result, cast.out, lambda m: requantize(m, x_t.fraction, result), cast)


def _float_index(t: ApType, table_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`table_index` on float64 mantissas: floor(m / 2^(width - n)) modulo 2^n, as an index array."""
    n = ceillog2(table_size)
    if n > t.width:
        raise NotImplementedError(f"a {table_size}-entry table addressed by {t} (fewer bits than the address)")
    scale, mask = 2.0 ** (n - t.width), (1 << n) - 1
    if not t.signed:  # 0 <= top < 2^n: the conversion's truncation is the floor, and no bits to mask

        def unsigned_index(v):
            v *= scale
            return v.astype(np.intp)
        return unsigned_index

    def signed_index(v):
        v *= scale
        np.floor(v, out=v)
        return v.astype(np.intp) & mask
    return signed_index


DIRECT_TABLE_LIMIT = 1 << 20  # entries (8 MiB of float64)


def _direct(lookup: Callable[[np.ndarray], np.ndarray], domain: Range) -> Callable[[np.ndarray], np.ndarray]:
    """``lookup`` (integer-valued float64 -> float64, elementwise) as one table over every value of domain,
    where that is at most DIRECT_TABLE_LIMIT values; else lookup itself."""
    size = domain.hi - domain.lo + 1
    if size > DIRECT_TABLE_LIMIT:
        return lookup
    table = lookup(np.arange(domain.lo, domain.hi + 1, dtype=np.float64))
    offset = domain.lo

    def direct(v):
        index = v.astype(np.intp)
        if offset:
            index -= offset
        return table.take(index)
    return direct


def softmax_layer(name: str, x_range: Range, x_t: ApType, result: ApType, cfg: SoftmaxConfig, n: int) -> Layer:
    exp_tab, inv_tab = cfg.tables()
    layer = Layer(name, "softmax", x_t, result, Range.of(result),
                  lambda m: softmax_stable(m, x_t, result, cfg, (exp_tab, inv_tab)))
    if cfg.exp_table_size & (cfg.exp_table_size - 1) or cfg.inv_table_size & (cfg.inv_table_size - 1):
        layer.why_exact = "a table size that is not a power of two"
        return layer
    exp_acc = requantize(exp_tab, cfg.exp_table_t.fraction, cfg.accum_t)
    terms = Range(int(exp_acc.min()), int(exp_acc.max()))
    inv = Range(int(inv_tab.min()), int(inv_tab.max()))
    if max(x_range.magnitude * 2, terms.magnitude * inv.magnitude) >= FLOAT_EXACT:
        layer.why_exact = "products reach 2^52"
        return layer
    norm = FloatCast.plan(x_t.fraction, Range(0, x_range.hi - x_range.lo), cfg.inp_norm_t)
    norm_index = _float_index(cfg.inp_norm_t, cfg.exp_table_size)
    inv_index = _float_index(cfg.inv_inp_t, cfg.inv_table_size)
    exp_acc_f, inv_f = exp_acc.astype(np.float64), inv_tab.astype(np.float64)
    corners = [a * b for a in (terms.lo, terms.hi) for b in (inv.lo, inv.hi)]
    out = FloatCast.plan(cfg.accum_t.fraction + cfg.inv_table_t.fraction, Range(min(corners), max(corners)), result)
    layer.out_range = out.out
    # no partial sum of the exponentials leaves accum: the reduction tree's order does not matter
    plain_sum = Range(min(terms.lo * n, 0), max(terms.hi * n, 0)).within(cfg.accum_t)
    sum_cast = FloatCast.plan(cfg.accum_t.fraction, Range.of(cfg.accum_t), cfg.inv_inp_t)

    def exponentials(diff):  # x_max - x -> exp table entry, in accum units
        return exp_acc_f[norm_index(norm(diff, inplace=True))]

    def inverses(total):  # sum of the exponentials -> 1/x table entry
        return inv_f[inv_index(sum_cast(total, inplace=True))]

    # Where the inputs of a table lookup take few values (x_max - x of a 16-bit type: 2^16), one direct
    # table over all of them replaces the cast and the address computation.
    exponentials = _direct(exponentials, Range(0, x_range.hi - x_range.lo))
    if plain_sum:
        inverses = _direct(inverses, Range(min(terms.lo * n, 0), max(terms.hi * n, 0)))

    def fast(v):
        exp_res = exponentials(v.max(axis=-1, keepdims=True) - v)
        if plain_sum:
            total = exp_res.sum(axis=-1)
        else:
            total = tree_sum(exp_res.astype(np.int64), cfg.accum_t).astype(np.float64)
        exp_res *= inverses(total)[:, None]
        return out(exp_res, inplace=True)

    layer.fast = fast
    return layer


WORK_VALUES = 1 << 19  # float64 values a block's largest intermediate array may hold (4 MiB: measured best for CNNs)


@dataclass
class FastEmulator:
    """The network: layers in the C code's call order, each reading arrays that earlier ones wrote (by name),
    from ``input_name`` (the input, cast to input_type) to ``output_name``."""

    input_type: ApType
    layers: list[Layer]
    input_size: int
    output_size: int
    input_name: str = "input"
    output_name: str = "output"
    output_type: ApType = field(init=False)

    def __post_init__(self):
        produced = {layer.output: layer for layer in self.layers}
        last = produced.get(self.output_name)
        self.output_type = last.out_type if last is not None else self.input_type
        if self.output_type.width > 24:
            raise NotImplementedError(f"output type {self.output_type} is wider than a float's 24-bit significand")
        self._fast_input = self.input_type.width <= 50
        # an input read again later (by this layer or a later one) is handed over as a copy
        reads = [(i, name) for i, layer in enumerate(self.layers) for name in layer.inputs]
        final = {name: position for position, (_, name) in enumerate(reads)}
        self._copies = [[final[name] != position or name == self.output_name
                         for position, (_, name) in enumerate(reads) if _ == i] for i in range(len(self.layers))]
        work = max([layer.work for layer in self.layers] + [self.input_size, 1])
        self.chunk = max(16, min(CHUNK, WORK_VALUES // work))

    @property
    def paths(self) -> dict[str, str]:
        """Each layer's implementation: 'float64' or 'int64 (why)'."""
        return {layer.name: "float64" if layer.fast is not None else f"int64 ({layer.why_exact})" for layer in self.layers}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a batch of already-scaled inputs, (n, input_size) -> (n, output_size) float32 (an image
        batch (n, rows, cols, channels) is taken as its rows of values), the same bits as
        :meth:`fpgaflow.emulation.library.Emulator.predict`. Large batches go through in blocks of ``chunk``
        samples, whose intermediate arrays stay in the CPU's caches."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.input_size:
            raise ValueError(f"expected {self.input_size} values per sample, got {x.shape[1]}")
        if len(x) <= self.chunk:
            return self._predict(x)
        out = np.empty((len(x), self.output_size), dtype=np.float32)
        for start in range(0, len(x), self.chunk):
            out[start:start + self.chunk] = self._predict(x[start:start + self.chunk])
        return out

    def inputs_of(self, x: np.ndarray, layer: str) -> np.ndarray:
        """What the layer named ``layer`` reads (its first input) for a batch of inputs, as float64 values: the
        firmware's own fixed-point values at that point (a classifier head's input, say). (n, values)."""
        names = [each.name for each in self.layers]
        if layer not in names:
            raise ValueError(f"the network has no layer {layer!r}; its layers are {', '.join(names)}")
        index = names.index(layer)
        wanted, t = self.layers[index].inputs[0], self.layers[index].in_type
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        out = []
        for start in range(0, len(x), self.chunk):
            arrays = self._run(x[start:start + self.chunk], stop=index)
            out.append(np.ldexp(arrays[wanted].astype(np.float64), -t.fraction))
        return np.concatenate(out) if out else np.empty((0, 0))

    def _run(self, x: np.ndarray, stop: int | None = None) -> dict[str, np.ndarray]:
        """The arrays after the first ``stop`` layers (all of them by default), by name."""
        if self._fast_input and np.isfinite(x).all():
            m = quantize_float64(x, self.input_type)
        else:  # +-inf as ap_types takes them; NaN is refused
            m = quantize_float(x, self.input_type)
        arrays = {self.input_name: m}
        for layer, copies in list(zip(self.layers, self._copies, strict=True))[:stop]:
            args = [arrays[name].copy() if copy else arrays.pop(name) for name, copy in zip(layer.inputs, copies, strict=True)]
            arrays[layer.output] = layer(*args)
        return arrays

    def _predict(self, x: np.ndarray) -> np.ndarray:
        m = self._run(x)[self.output_name]
        if m.dtype == np.float64:
            m *= 2.0**-self.output_type.fraction
            m += 0.0  # -0.0 -> +0.0, as ap_fixed's conversion to float gives
            return m.astype(np.float32)
        return to_float(m, self.output_type)
