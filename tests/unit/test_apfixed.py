"""The float64 casts of the emulator's fast path against the int64 reference casts (themselves checked
against ap_types compiled with g++ in tests/service/test_fastemu.py), on random types in every rounding
and overflow mode, random ranges and random values, including the edges of each range."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.emulation.apfixed import (
    OVERFLOW_MODES,
    QUANTIZATION_MODES,
    ApType,
    FloatCast,
    Range,
    overflow_float,
    quantize_float,
    quantize_float64,
    requantize,
)


def random_type(rng, max_width=24) -> ApType:
    signed = bool(rng.random() < 0.7)
    width = int(rng.integers(1 if not signed else 2, max_width + 1))
    return ApType(width, int(rng.integers(-4, width + 5)), signed, str(rng.choice(QUANTIZATION_MODES)),
                  str(rng.choice(OVERFLOW_MODES)))


def values_in(rng, source: Range, n: int = 4000) -> np.ndarray:
    inside = rng.integers(source.lo, source.hi + 1, size=n)
    edges = np.array([source.lo, source.hi, 0, 1, -1, source.lo + 1, source.hi - 1])
    halves = (rng.integers(-64, 64, size=200) * 2 + 1) << 3  # odd multiples of 2^3: exact halves for shifts of 4
    return np.clip(np.concatenate([inside, edges, halves]), source.lo, source.hi).astype(np.int64)


@pytest.mark.parametrize("seed", range(60))
def test_float_casts_equal_the_int64_reference(seed):
    rng = np.random.default_rng(seed)
    t = random_type(rng)
    fraction = int(rng.integers(-2, 30))
    bits = int(rng.integers(1, 46))
    source = Range(-(1 << bits) if rng.random() < 0.7 else 0, (1 << bits) - 1)
    m = values_in(rng, source)
    try:
        cast = FloatCast.plan(fraction, source, t)
    except NotImplementedError:  # refused exactly where float64 could not hold the scaled values
        assert source.magnitude << max(t.fraction - fraction, 0) >= 1 << 52
        return
    got = cast(m.astype(np.float64))
    expected = requantize(m, fraction, t)
    assert np.array_equal(got, expected.astype(np.float64)), (t, fraction, source)
    assert cast.out.lo <= expected.min() and expected.max() <= cast.out.hi  # the planned range holds
    assert cast.rounds == (fraction > t.fraction)  # rounding only where bits drop


@pytest.mark.parametrize("seed", range(40))
def test_float_input_quantization_equals_the_int64_reference(seed):
    rng = np.random.default_rng(100 + seed)
    t = random_type(rng, max_width=50)
    x = np.concatenate([rng.normal(size=3000) * 10.0 ** rng.uniform(-3, 6, size=3000),
                        np.array([0.0, -0.0, 1e30, -1e30, 3.4e38, -3.4e38, 2.0**51, -(2.0**51), 2.0**60 + 2.0**40])])
    x = np.concatenate([x, np.round(x[:500] * 2.0**t.fraction * 2) / 2 / 2.0**t.fraction])  # exact ties
    x = x.astype(np.float32)
    assert np.array_equal(quantize_float64(x, t), quantize_float(x, t).astype(np.float64)), t


@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
def test_float_overflow_wraps_and_saturates_like_the_reference(overflow):
    from fpgaflow.emulation.apfixed import _overflow

    for t in (ApType(8, 3, True, "AP_TRN", overflow), ApType(5, 5, False, "AP_TRN", overflow), ApType(40, 9, True, "AP_TRN", overflow)):
        m = np.concatenate([np.arange(-3000, 3000), [-(1 << 50), (1 << 50) - 1, 1 << 45]]).astype(np.int64)
        assert np.array_equal(overflow_float(m.astype(np.float64), t), _overflow(m, t).astype(np.float64)), t


def test_a_cast_beyond_float64s_exact_integers_is_refused():
    with pytest.raises(NotImplementedError, match="2\\^52"):
        FloatCast.plan(0, Range(-(1 << 40), 1 << 40), ApType(60, 10))
