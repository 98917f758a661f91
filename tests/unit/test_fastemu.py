"""The fast emulator's ap_fixed arithmetic against values worked out by hand from the ap_fixed rules
(ap_types' ap_fixed_base: quantize first, then overflow; AP_RND rounds halves up, AP_RND_CONV to even...)."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.emulation.fastemu import (
    ApType,
    dense_latency,
    exp_table,
    invert_table,
    parse_type,
    quantize_float,
    relu,
    requantize,
    table_address_values,
    table_index,
    tree_sum,
)

Q4 = "ap_fixed<4,2,{q},{o}>"  # 2 fractional bits: steps of 0.25, range -2 .. 1.75 (mantissas -8 .. 7)


def values(m, t: ApType) -> list[float]:
    return (np.asarray(m, dtype=np.float64) / 2.0**t.fraction).tolist()


def test_parse_type_reads_hls4ml_spellings():
    assert parse_type("ap_fixed<16,6>") == ApType(16, 6, True, "AP_TRN", "AP_WRAP", 0)
    assert parse_type("ap_ufixed<18,3,AP_RND,AP_SAT,0>") == ApType(18, 3, False, "AP_RND", "AP_SAT", 0)
    assert parse_type("ap_int<8>") == ApType(8, 8, True)
    assert parse_type("ap_uint<1>") == ApType(1, 1, False)
    assert parse_type("ap_fixed<16, 6, AP_RND_CONV>").quantization == "AP_RND_CONV"


@pytest.mark.parametrize("spelling, named", [("float", "float"), ("ap_fixed<8,3,AP_RND,AP_WRAP,2>", "N=2"),
                                             ("ap_fixed<8,3,AP_FOO>", "AP_FOO"), ("ap_fixed<80,30>", "width 80")])
def test_uncovered_types_raise_naming_what(spelling, named):
    with pytest.raises(NotImplementedError, match=named):
        parse_type(spelling)


@pytest.mark.parametrize("mode, expected", [
    # inputs:       0.3    -0.3   0.375  -0.375  0.625  -0.625
    ("AP_TRN",      [0.25, -0.5,  0.25,  -0.5,   0.5,   -0.75]),
    ("AP_TRN_ZERO", [0.25, -0.25, 0.25,  -0.25,  0.5,   -0.5]),
    ("AP_RND",      [0.25, -0.25, 0.5,   -0.25,  0.75,  -0.5]),
    ("AP_RND_ZERO", [0.25, -0.25, 0.25,  -0.25,  0.5,   -0.5]),
    ("AP_RND_MIN_INF", [0.25, -0.25, 0.25, -0.5, 0.5,   -0.75]),
    ("AP_RND_INF",  [0.25, -0.25, 0.5,   -0.5,   0.75,  -0.75]),
    ("AP_RND_CONV", [0.25, -0.25, 0.5,   -0.5,   0.5,   -0.5]),
])
def test_quantization_modes_from_float_and_from_finer_mantissas(mode, expected):
    t = parse_type(Q4.format(q=mode, o="AP_SAT"))
    x = np.array([0.3, -0.3, 0.375, -0.375, 0.625, -0.625])
    assert values(quantize_float(x, t), t) == expected
    exact = np.array([6, -6, 6, -6, 10, -10])  # +-0.375, +-0.625 with 4 fractional bits
    assert values(requantize(exact, 4, t), t)[2:] == expected[2:]


@pytest.mark.parametrize("mode, expected", [
    # inputs:         2.0    -2.5   -2.0   1.75
    ("AP_WRAP",     [-2.0,  1.5,  -2.0,  1.75]),
    ("AP_SAT",      [1.75,  -2.0, -2.0,  1.75]),
    ("AP_SAT_ZERO", [0.0,   0.0,  -2.0,  1.75]),
    ("AP_SAT_SYM",  [1.75,  -1.75, -1.75, 1.75]),
])
def test_overflow_modes(mode, expected):
    t = parse_type(Q4.format(q="AP_TRN", o=mode))
    assert values(quantize_float(np.array([2.0, -2.5, -2.0, 1.75]), t), t) == expected
    assert values(requantize(np.array([8, -10, -8, 7]), 2, t), t) == expected


def test_unsigned_types_wrap_and_saturate_negatives():
    assert values(quantize_float(np.array([-0.25]), parse_type("ap_ufixed<4,2>")), ApType(4, 2, False)) == [3.75]
    assert quantize_float(np.array([-0.25]), parse_type("ap_ufixed<4,2,AP_TRN,AP_SAT>")).tolist() == [0]


def test_huge_and_infinite_floats():
    t = parse_type("ap_fixed<8,4>")  # 4 fractional bits, wraps
    # 1e30 * 16 = 2^34 * 5^30: its low 8 bits are 0; 2^40 + 3 keeps only the 3
    assert values(quantize_float(np.array([1e30, 2.0**40 + 3.0]), t), t) == [0.0, 3.0]
    sat = parse_type("ap_fixed<8,4,AP_RND,AP_SAT>")
    assert values(quantize_float(np.array([np.inf, -np.inf, 1e30]), sat), sat) == [7.9375, -8.0, 7.9375]
    assert quantize_float(np.array([np.inf]), t).tolist() == [0]
    with pytest.raises(ValueError):
        quantize_float(np.array([np.nan]), t)


def test_table_addresses_are_the_top_bits():
    unsigned = parse_type("ap_ufixed<16,5>")
    assert table_index(np.array([0, 15, 16, 65535]), unsigned, 4096).tolist() == [0, 0, 1, 4095]
    signed = parse_type("ap_fixed<8,3>")  # 5 fractional bits, a 16-entry table reads the top 4 bits
    assert table_index(np.array([-1, 16, -128]), signed, 16).tolist() == [15, 1, 8]
    assert table_address_values(signed, 16)[[0, 1, 8, 15]].tolist() == [0.0, 0.5, -4.0, -0.5]


def test_softmax_tables():
    address = parse_type("ap_ufixed<4,2>")  # a 4-entry table: addresses 0, 1, 2, 3
    t = parse_type("ap_fixed<8,2,AP_RND,AP_SAT>")  # 6 fractional bits
    # exp(-0)=1 -> 64, exp(-1)*64 = 23.54 -> 24, exp(-2)*64 = 8.66 -> 9, exp(-3)*64 = 3.19 -> 3
    assert exp_table(address, t, 4, 1.0, negative=True).tolist() == [64, 24, 9, 3]
    inv_t = parse_type("ap_fixed<8,4,AP_RND,AP_SAT>")  # 4 fractional bits
    # 1/0 = inf saturates; 1, 0.5, 1/3 * 16 = 5.33 -> 5
    assert invert_table(address, inv_t, 4).tolist() == [127, 16, 8, 5]


def test_tree_sum_saturates_in_hls4ml_reduce_order():
    t = parse_type(Q4.format(q="AP_TRN", o="AP_SAT"))
    # reduce over 5: ((7 + 7) + (-8 + -8)) + 3 = (7 + -8) + 3 = 2; left to right it would be -5
    assert tree_sum(np.array([[7, 7, -8, -8, 3]]), t).tolist() == [2]


def test_dense_with_a_saturating_accumulator_adds_in_input_order():
    x_t, w_t, acc_t, res_t = (parse_type(s) for s in ("ap_fixed<4,2>", "ap_int<2>", "ap_fixed<4,2,AP_TRN,AP_SAT>",
                                                       "ap_fixed<8,4>"))
    x = np.array([[4, 4, -4]])  # 1.0, 1.0, -1.0
    out = dense_latency(x, x_t, np.array([[1], [1], [1]]), w_t, np.array([0]), w_t, acc_t, res_t)
    assert values(out, res_t) == [[0.75]]  # 1 + 1 saturates at 1.75, minus 1; a plain sum would give 1.0


def test_dense_casts_each_product_to_a_coarser_accumulator():
    x_t, w_t, acc_t = parse_type("ap_fixed<4,2>"), parse_type("ap_fixed<4,1>"), parse_type("ap_fixed<6,4>")
    x = np.array([[4, 4, 4]])  # 1.0 each; times 0.375 = 0.375, truncated to 0.25 in the accumulator
    out = dense_latency(x, x_t, np.array([[3], [3], [3]]), w_t, np.array([0]), w_t, acc_t, acc_t)
    assert values(out, acc_t) == [[0.75]]


def test_dense_exact_path_and_result_cast():
    x_t, w_t, acc_t, res_t = (parse_type(s) for s in ("ap_fixed<8,3>", "ap_fixed<8,3>", "ap_fixed<20,8>", "ap_fixed<6,1>"))
    x = quantize_float(np.array([[0.5, -1.0], [1.5, 1.0]]), x_t)
    w = quantize_float(np.array([[0.5], [0.25]]), w_t)
    b = quantize_float(np.array([0.125]), w_t)
    # 0.25 - 0.25 + 0.125 = 0.125; 0.75 + 0.25 + 0.125 = 1.125 wraps in ap_fixed<6,1> to -0.875
    assert values(dense_latency(x, x_t, w, w_t, b, w_t, acc_t, res_t), res_t) == [[0.125], [-0.875]]


def test_relu_zeroes_negatives_and_casts():
    x_t, narrow = parse_type("ap_fixed<8,3>"), parse_type("ap_fixed<4,1>")
    x = quantize_float(np.array([-0.25, 0.0, 0.5, 1.5]), x_t)
    assert values(relu(x, x_t, x_t), x_t) == [0.0, 0.0, 0.5, 1.5]
    assert values(relu(x, x_t, narrow), narrow) == [0.0, 0.0, 0.5, -0.5]  # 1.5 wraps in ap_fixed<4,1>
