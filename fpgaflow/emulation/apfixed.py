"""ap_fixed arithmetic on whole arrays, as ap_types' ``ap_fixed_base`` does it, in two representations.

- **int64 mantissas** (:func:`requantize`, :func:`quantize_float`): every width up to 62 bits, every
  rounding (AP_TRN, AP_RND, ...) and overflow (AP_WRAP, AP_SAT, ...) mode. The reference: tested against
  ap_types' own casts compiled with g++.
- **float64 mantissas** (:class:`FloatCast`, :func:`quantize_float64`): the same casts on integers held in
  float64, exact while every magnitude stays below 2^52 (which the caller proves from value ranges). Fewer
  passes over memory, and BLAS matrix products on them are exact: the fast path of the emulator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def fits(t: ApType, inner: ApType) -> bool:
    """Whether every value of `inner` is exactly representable in t (no quantization, no overflow)."""
    if t.fraction < inner.fraction:
        return False
    shift = t.fraction - inner.fraction
    return (inner.min_mantissa << shift) >= t.min_mantissa and (inner.max_mantissa << shift) <= t.max_mantissa


# ----------------------------------------------------------------------------------------------------
# float64 mantissas
# ----------------------------------------------------------------------------------------------------

FLOAT_EXACT = 1 << 52  # integers below this in magnitude, and their halves, are exact in float64


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of integer mantissas (static: from types, weights and the previous layers)."""

    lo: int
    hi: int

    @classmethod
    def of(cls, t: ApType) -> Range:
        return cls(t.min_mantissa, t.max_mantissa)

    @property
    def magnitude(self) -> int:
        return max(-self.lo, self.hi)

    def within(self, t: ApType) -> bool:
        return t.min_mantissa <= self.lo and self.hi <= t.max_mantissa

    def union(self, other: Range) -> Range:
        return Range(min(self.lo, other.lo), max(self.hi, other.hi))


def round_float(v: np.ndarray, mode: str) -> np.ndarray:
    """v (float64, exact) rounded to integers in place, as the quantization mode says (ties included)."""
    if mode == "AP_TRN":
        return np.floor(v, out=v)
    if mode == "AP_TRN_ZERO":
        return np.trunc(v, out=v)
    if mode == "AP_RND":
        v += 0.5
        return np.floor(v, out=v)
    if mode == "AP_RND_MIN_INF":
        v -= 0.5
        return np.ceil(v, out=v)
    if mode == "AP_RND_CONV":
        return np.rint(v, out=v)  # IEEE round-half-to-even
    if mode == "AP_RND_INF":
        return np.copysign(np.floor(np.abs(v) + 0.5), v, out=v)
    if mode == "AP_RND_ZERO":
        return np.copysign(np.ceil(np.abs(v) - 0.5), v, out=v)
    raise NotImplementedError(f"quantization mode {mode} is not covered")


def overflow_float(v: np.ndarray, t: ApType) -> np.ndarray:
    """Integer-valued float64 mantissas (|v| < 2^52) brought into t's range in place by its overflow mode."""
    lo, hi = t.min_mantissa, t.max_mantissa
    if t.overflow == "AP_WRAP":  # v - 2^w floor((v - lo) / 2^w): every step exact
        if v.size and v.min() >= lo and v.max() <= hi:  # two reading passes instead of five (usual for results)
            return v
        k = v * 2.0**-t.width
        if lo:
            k += 0.5
        np.floor(k, out=k)
        k *= 2.0**t.width
        v -= k
        return v
    if t.overflow == "AP_SAT":
        return np.clip(v, lo, hi, out=v)
    if t.overflow == "AP_SAT_SYM":
        return np.clip(v, -hi if t.signed else 0, hi, out=v)
    if t.overflow == "AP_SAT_ZERO":
        v[(v < lo) | (v > hi)] = 0.0
        return v
    raise NotImplementedError(f"overflow mode {t.overflow} is not covered")


@dataclass(frozen=True)
class FloatCast:
    """A cast to type t of float64 mantissas with a known :class:`Range`, reduced to the passes it needs:
    a power-of-two scale (exact), rounding only where bits are dropped, overflow only where the range
    can leave t's. ``scaled=True`` means the caller has already applied the scale (folded into weights)."""

    t: ApType
    scale: float
    rounds: bool
    overflows: bool
    out: Range

    @classmethod
    def plan(cls, fraction: int, source: Range, t: ApType) -> FloatCast:
        shift = t.fraction - fraction
        if source.magnitude * (1 << max(shift, 0)) >= FLOAT_EXACT:
            raise NotImplementedError(f"casting to {t}: magnitudes reach 2^52, beyond float64's exact integers")
        # floor(v) <= any rounding of v <= ceil(v)
        lo, hi = (source.lo << shift, source.hi << shift) if shift >= 0 else (source.lo >> -shift, -((-source.hi) >> -shift))
        scaled = Range(lo, hi)
        overflows = not scaled.within(t)
        out = Range(max(lo, t.min_mantissa), min(hi, t.max_mantissa)) if not overflows or t.overflow != "AP_WRAP" else Range.of(t)
        if t.overflow == "AP_SAT_ZERO" and overflows:
            out = out.union(Range(0, 0))
        return cls(t, 2.0**shift, shift < 0, overflows, out)

    def __call__(self, v: np.ndarray, scaled: bool = False, inplace: bool = False) -> np.ndarray:
        if not scaled and self.scale != 1.0:
            v = v * self.scale
        elif not inplace and (self.rounds or self.overflows):
            v = v.copy()
        if self.rounds:
            v = round_float(v, self.t.quantization)
        if self.overflows:
            v = overflow_float(v, self.t)
        return v


def quantize_float64(x: np.ndarray, t: ApType) -> np.ndarray:
    """:func:`quantize_float` for finite inputs, as float64 mantissas: the same values.

    Under AP_WRAP only the value modulo 2^width matters, and fmod is exact (needed only for magnitudes
    from 2^51); the saturating modes clip far values to +-2^(width+1), outside the range either way.
    Rounding then sees magnitudes below 2^52 with the float's own fraction bits, which float64 holds."""
    v = np.asarray(x, dtype=np.float64) * 2.0**t.fraction  # exact: a power-of-two scale
    if t.overflow != "AP_WRAP":
        limit = float(1 << (t.width + 1))
        np.clip(v, -limit, limit, out=v)
    elif v.size and (v.min() <= -(2.0**51) or v.max() >= 2.0**51):
        np.fmod(v, float(1 << t.width), out=v)
    v = round_float(v, t.quantization)
    return overflow_float(v, t)
