"""hls4ml's image layers on mantissas, as :mod:`fpgaflow.emulation.fastemu` layers (issue 18).

A batch of images is held as (samples, rows x columns x channels) mantissas in hls4ml's order (row, column,
channel), the same whether the design is io_parallel or io_stream. What each layer computes, as hls4ml 1.3's
Vivado/Vitis templates write it:

- **convolution** (Conv1D, Conv2D, pointwise): every output pixel is the dense kernel of the layer's
  ``mult_config`` applied to its window, read (kernel row, kernel column, channel) with zeros where the
  io_parallel buffer pads. So it is the dense layer's exact product on im2col rows: one BLAS product where
  the range analysis proves float64 exact, the C loop's order of additions otherwise;
- **zero padding** (io_stream's separate padding layer): zeros, then a cast;
- **max pooling**: the window's largest value and two casts, to the pooling's accumulator and to its result
  type; io_parallel takes the maximum before the first cast, io_stream after it, which differs only when the
  accumulator wraps;
- **average pooling** (without padding): the window's sum in the accumulator, divided by its size with
  ap_fixed's division (the quotient truncated toward zero at the accumulator's resolution), then the cast;
- **batch normalization** (``nnet::normalize``, where hls4ml did not fold it into a convolution): the exact
  product with the channel's scale plus its bias, cast to the result;
- **add** (the residual connection): the exact sum of its two inputs cast to its own result type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fpgaflow.emulation.apfixed import FLOAT_EXACT, ApType, FloatCast, Range, requantize
from fpgaflow.emulation.fastemu import Layer, dense_layer


@dataclass(frozen=True)
class Window:
    """Where a convolution or a pooling reads: an in_h x in_w image of ``chan`` channels, padded, read by a
    kh x kw window moved by (sh, sw) to out_h x out_w positions. A 1-D layer has in_h = kh = out_h = 1."""

    in_h: int
    in_w: int
    chan: int
    kh: int
    kw: int
    sh: int
    sw: int
    out_h: int
    out_w: int
    pad_top: int = 0
    pad_bottom: int = 0
    pad_left: int = 0
    pad_right: int = 0

    def __post_init__(self):
        rows = self.in_h + self.pad_top + self.pad_bottom
        cols = self.in_w + self.pad_left + self.pad_right
        if (rows - self.kh) // self.sh + 1 != self.out_h or (cols - self.kw) // self.sw + 1 != self.out_w:
            raise ValueError(f"a {self.kh}x{self.kw} window moved by {self.sh}x{self.sw} over a padded {rows}x{cols} "
                             f"image does not give {self.out_h}x{self.out_w} outputs")

    @property
    def padded(self) -> bool:
        return any((self.pad_top, self.pad_bottom, self.pad_left, self.pad_right))

    @property
    def in_values(self) -> int:
        return self.in_h * self.in_w * self.chan

    @property
    def positions(self) -> int:
        return self.out_h * self.out_w


def patches(m: np.ndarray, window: Window, fill: float = 0) -> np.ndarray:
    """Every window of each image: (n, out_h, out_w, kh, kw, chan), a view where nothing is padded."""
    x = m.reshape(len(m), window.in_h, window.in_w, window.chan)
    if window.padded:
        x = np.pad(x, ((0, 0), (window.pad_top, window.pad_bottom), (window.pad_left, window.pad_right), (0, 0)),
                   constant_values=fill)
    view = sliding_window_view(x, (window.kh, window.kw), axis=(1, 2))  # (n, rows, cols, chan, kh, kw)
    view = view[:, :: window.sh, :: window.sw][:, : window.out_h, : window.out_w]
    return view.transpose(0, 1, 2, 4, 5, 3)


def im2col(m: np.ndarray, window: Window) -> np.ndarray:
    """The rows a convolution multiplies: (n x out_h x out_w, kh x kw x chan), zeros where it pads."""
    k = window.kh * window.kw * window.chan
    return np.ascontiguousarray(patches(m, window)).reshape(-1, k)


def conv_layer(name: str, x_range: Range, x_t: ApType, w: np.ndarray, w_t: ApType, b: np.ndarray, b_t: ApType,
               accum: ApType, result: ApType, strategy: str, window: Window) -> Layer:
    """nnet::conv_1d_cl / conv_2d_cl (w: (kh x kw x chan, filters) mantissas): the dense layer of its
    multiplications on each output pixel's window."""
    seen = x_range.union(Range(0, 0)) if window.padded else x_range
    dense = dense_layer(name, seen, x_t, w, w_t, b, b_t, accum, result, strategy)

    def exact(m):
        return dense.exact(im2col(m, window)).reshape(len(m), -1)

    layer = Layer(name, "conv", x_t, result, dense.out_range, exact, why_exact=dense.why_exact,
                  work=window.positions * (w.shape[0] + w.shape[1]))
    if dense.fast is not None:
        multiply = dense.fast
        layer.fast = lambda v: multiply(im2col(v, window)).reshape(len(v), -1)
    return layer


def zeropad_layer(name: str, x_range: Range, x_t: ApType, result: ApType, window: Window) -> Layer:
    """nnet::zeropad1d_cl / zeropad2d_cl: the image framed by zeros, cast to the result type."""

    def pad(m):
        x = m.reshape(len(m), window.in_h, window.in_w, window.chan)
        x = np.pad(x, ((0, 0), (window.pad_top, window.pad_bottom), (window.pad_left, window.pad_right), (0, 0)))
        return x.reshape(len(m), -1)

    cast = FloatCast.plan(x_t.fraction, x_range.union(Range(0, 0)), result)
    rows = window.in_h + window.pad_top + window.pad_bottom
    cols = window.in_w + window.pad_left + window.pad_right
    layer = Layer(name, "zeropad", x_t, result, cast.out, lambda m: requantize(pad(m), x_t.fraction, result),
                  work=rows * cols * window.chan)
    layer.fast = lambda v: cast(pad(v), inplace=True)
    return layer


def pool_layer(name: str, x_range: Range, x_t: ApType, accum: ApType, result: ApType, window: Window, op: str,
               stream: bool) -> Layer:
    """nnet::pooling1d_cl / pooling2d_cl, ``op`` Max or Average, of io_stream (``stream``) or io_parallel."""
    what = f"pooling layer {name}"
    size = window.kh * window.kw
    if op == "Max":
        if window.padded and stream:
            raise NotImplementedError(f"{what}: padded max pooling in io_stream")
        # io_parallel pads with pad_val: the sign bit set, the most negative value of a signed type
        fill = x_t.min_mantissa if x_t.signed else 1 << (x_t.width - 1)
        seen = x_range.union(Range(fill, fill)) if window.padded else x_range
        return _max_pool(name, seen, x_t, accum, result, window, fill, stream)
    if op != "Average":
        raise NotImplementedError(f"{what}: pooling operation {op}")
    if window.padded:
        raise NotImplementedError(f"{what}: padded average pooling (its divisor counts the pixels inside)")
    shift = accum.fraction - x_t.fraction
    if shift < 0:
        raise NotImplementedError(f"{what}: the accumulator {accum} has fewer fraction bits than its input {x_t}")
    sums = Range(min(x_range.lo * size, x_range.lo) << shift, max(x_range.hi * size, x_range.hi) << shift)
    if not sums.within(accum):
        raise NotImplementedError(f"{what}: sums of {size} values of {x_t} may leave the accumulator {accum}")
    return _average_pool(name, sums, x_t, accum, result, window, shift)


def reduce_windows(m: np.ndarray, window: Window, fill, op) -> np.ndarray:
    """``op`` (np.maximum, np.add) over each output pixel's window, channel by channel: (n, out_h x out_w x chan).
    One strided view per window offset, reduced pairwise: no window array is built."""
    x = m.reshape(len(m), window.in_h, window.in_w, window.chan)
    if window.padded:
        x = np.pad(x, ((0, 0), (window.pad_top, window.pad_bottom), (window.pad_left, window.pad_right), (0, 0)),
                   constant_values=fill)
    rows, cols = window.sh * (window.out_h - 1) + 1, window.sw * (window.out_w - 1) + 1
    views = [x[:, dy: dy + rows: window.sh, dx: dx + cols: window.sw] for dy in range(window.kh) for dx in range(window.kw)]
    out = views[0].copy()
    for view in views[1:]:
        op(out, view, out=out)
    return out.reshape(len(m), -1)


def _max_pool(name, x_range, x_t, accum, result, window, fill, stream) -> Layer:
    def exact(m):
        if stream:  # each value cast to the accumulator, then the largest
            return requantize(reduce_windows(requantize(m, x_t.fraction, accum), window, fill, np.maximum),
                              accum.fraction, result)
        # the largest value, then cast to the accumulator
        best = requantize(reduce_windows(m, window, fill, np.maximum), x_t.fraction, accum)
        return requantize(best, accum.fraction, result)

    to_accum = FloatCast.plan(x_t.fraction, x_range, accum)
    to_result = FloatCast.plan(accum.fraction, to_accum.out, result)
    layer = Layer(name, "pool", x_t, result, to_result.out, exact, work=window.in_values)

    def fast(v):
        if stream:
            best = reduce_windows(to_accum(v, inplace=True), window, fill, np.maximum)
        else:
            best = to_accum(reduce_windows(v, window, fill, np.maximum), inplace=True)
        return to_result(best, inplace=True)

    layer.fast = fast
    return layer


def _average_pool(name, sums, x_t, accum, result, window, shift) -> Layer:
    size = window.kh * window.kw
    quotients = Range(-((-sums.lo) // size) if sums.lo < 0 else sums.lo // size, sums.hi // size)

    def exact(m):
        total = reduce_windows(m, window, 0, np.add) << shift
        quotient = np.sign(total) * (np.abs(total) // size)  # ap_fixed's division: toward zero
        return requantize(quotient, accum.fraction, result)

    cast = FloatCast.plan(accum.fraction, quotients, result)
    layer = Layer(name, "pool", x_t, result, cast.out, exact, work=window.in_values)
    if sums.magnitude < FLOAT_EXACT:
        scale = 2.0**shift

        def fast(v):
            total = reduce_windows(v, window, 0, np.add)
            if scale != 1.0:
                total *= scale  # exact
            total /= size  # correctly rounded: an integer quotient is exact, another stays 1/size from one
            np.trunc(total, out=total)
            return cast(total, inplace=True)

        layer.fast = fast
    else:
        layer.why_exact = "sums reach 2^52"
    return layer


def add_layer(name: str, a_range: Range, a_t: ApType, b_range: Range, b_t: ApType, result: ApType) -> Layer:
    """nnet::add: the exact sum of the two inputs (at the finer of their resolutions), cast to the result."""
    fraction = max(a_t.fraction, b_t.fraction)
    sa, sb = fraction - a_t.fraction, fraction - b_t.fraction
    total = Range((a_range.lo << sa) + (b_range.lo << sb), (a_range.hi << sa) + (b_range.hi << sb))
    if max(a_t.width + sa, b_t.width + sb) > 62:
        raise NotImplementedError(f"add layer {name}: sums of {a_t} and {b_t} are wider than int64")

    def exact(a, b):
        return requantize((a << sa) + (b << sb), fraction, result)

    cast = FloatCast.plan(fraction, total, result) if total.magnitude < FLOAT_EXACT else None
    layer = Layer(name, "add", a_t, result, cast.out if cast else Range.of(result), exact, work=0)
    if cast is None:
        layer.why_exact = "sums reach 2^52"
    else:
        fa, fb = 2.0**sa, 2.0**sb

        def fast(a, b):
            if fa != 1.0:
                a *= fa
            a += b * fb if fb != 1.0 else b
            return cast(a, inplace=True)

        layer.fast = fast
    return layer


def normalize_layer(name: str, x_range: Range, x_t: ApType, scale: np.ndarray, s_t: ApType, bias: np.ndarray,
                    b_t: ApType, result: ApType) -> Layer:
    """nnet::normalize: x times its channel's scale (exact) plus its bias (exact), cast to the result type.
    ``scale`` and ``bias`` are mantissas, one per channel (the last, fastest axis) or one per value."""
    fraction = max(x_t.fraction + s_t.fraction, b_t.fraction)
    sp, sb = fraction - x_t.fraction - s_t.fraction, fraction - b_t.fraction
    if x_t.width + s_t.width + sp > 62 or b_t.width + sb > 62:
        raise NotImplementedError(f"batch normalization {name}: products of {x_t} and {s_t} are wider than int64")
    so = scale.astype(object)
    corners = np.stack([so * x_range.lo, so * x_range.hi])
    bo = bias.astype(object) << sb
    total = Range(int(((corners.min(axis=0) << sp) + bo).min()), int(((corners.max(axis=0) << sp) + bo).max()))
    s_int, b_int = scale.astype(np.int64), bias.astype(np.int64) << sb
    per = len(scale)

    def exact(m):
        x = m.reshape(len(m), -1, per)
        return requantize(((x * s_int) << sp) + b_int, fraction, result).reshape(len(m), -1)

    magnitude = max(abs(total.lo), abs(total.hi), int(np.abs(so).max()) * x_range.magnitude << sp)
    layer = Layer(name, "normalize", x_t, result, Range.of(result), exact, work=0)
    if magnitude >= FLOAT_EXACT:
        layer.why_exact = "products reach 2^52"
        return layer
    cast = FloatCast.plan(fraction, total, result)
    layer.out_range = cast.out
    s_f, b_f = s_int.astype(np.float64) * 2.0**sp, b_int.astype(np.float64)

    def fast(v):
        x = v.reshape(len(v), -1, per)
        x *= s_f
        x += b_f
        return cast(x, inplace=True).reshape(len(v), -1)

    layer.fast = fast
    return layer
