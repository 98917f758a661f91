"""The converter's resource and latency estimate without vendor tools (docs/estimates.md)."""

import math

import numpy as np
import pytest

from fpgaflow.emulation.timing import dense_timing
from fpgaflow.errors import StageError
from fpgaflow_converter.estimate import (
    LayerShape,
    bram18_for,
    dsp_per_multiplier,
    estimate,
    estimate_layer,
    layers_from_hls_model,
    parse_precision,
)


def dense(n_in=16, n_out=64, bits=16, rf=1, zeros=0, strategy="latency", input_bits=16):
    return LayerShape(name="fc", class_name="Dense", n_in=n_in, n_out=n_out, input_width=input_bits, input_integer=6,
                      result_width=bits, result_integer=6, weight_width=bits, weight_integer=6, bias_width=bits,
                      bias_integer=6, accum_width=2 * bits + 4, accum_integer=16, reuse_factor=rf,
                      strategy=strategy, n_zero_weights=zeros)


@pytest.mark.parametrize("rf,zeros", [(1, 0), (1, 300), (4, 0), (4, 301), (8, 1000), (16, 7)])
def test_dsps_of_a_16_bit_dense_layer_are_nonzero_products_over_the_reuse_factor(rf, zeros):
    est = estimate_layer(dense(rf=rf, zeros=zeros), clock_period_ns=5.0)
    assert est["dsp"] == math.ceil((16 * 64 - zeros) / rf)
    assert est["ii_cycles"] == rf


def test_pruned_weights_save_dsps_and_a_fully_pruned_layer_uses_none():
    full = estimate_layer(dense(), 5.0)["dsp"]
    assert estimate_layer(dense(zeros=512), 5.0)["dsp"] == full - 512
    assert estimate_layer(dense(zeros=16 * 64), 5.0)["dsp"] == 0


def test_a_32_bit_multiplier_costs_several_cascaded_dsps():
    assert dsp_per_multiplier(27, 18) == dsp_per_multiplier(18, 27) == 1
    assert dsp_per_multiplier(32, 32) == 4  # ceil(32/27) * ceil(32/18)
    assert dsp_per_multiplier(18, 18, signed_a=False) == 1 and dsp_per_multiplier(27, 18, signed_b=False) == 2
    wide = estimate_layer(dense(bits=32, input_bits=32), 5.0)
    assert wide["dsp"] == 16 * 64 * 4 > estimate_layer(dense(), 5.0)["dsp"]


def test_a_4_bit_layer_uses_no_dsp_but_luts():
    narrow = estimate_layer(dense(bits=4, input_bits=4), 5.0)
    assert narrow["dsp"] == 0 and narrow["multipliers_in_luts"]
    assert narrow["lut"] > 16 * 64  # at least one LUT per product
    assert estimate_layer(dense(bits=8), 5.0)["dsp"] == 0  # hls4ml's own estimator: no DSP below 9-bit weights
    assert estimate_layer(dense(bits=9), 5.0)["dsp"] == 16 * 64


def test_resource_strategy_keeps_a_large_layer_weights_in_bram_and_latency_strategy_does_not():
    big = dict(n_in=256, n_out=128, rf=64)
    resource = estimate_layer(dense(strategy="resource", **big), 5.0)
    # 64 words of 512 x 16 bits: 512*16/36 = 228 columns of a 512 x 36 block
    assert resource["bram18"] == math.ceil(256 * 128 * 16 / 64 / 36)
    assert resource["bram18"] >= math.ceil(256 * 128 * 16 / (18 * 1024))
    assert resource["dsp"] == 256 * 128 // 64
    assert estimate_layer(dense(strategy="latency", **big), 5.0)["bram18"] == 0
    assert estimate_layer(dense(strategy="resource", rf=1), 5.0)["bram18"] == 0


def test_bram18_uses_the_best_aspect_ratio():
    assert bram18_for(1024, 18) == 1 and bram18_for(512, 36) == 1 and bram18_for(2048, 18) == 2
    assert bram18_for(4, 72) == 2 and bram18_for(0, 8) == 0


def test_softmax_stores_its_exp_and_inverse_tables_in_bram():
    sm = LayerShape(name="softmax", class_name="Softmax", n_in=5, n_out=5, input_width=16, result_width=16,
                    activation="softmax", table_size=1024, table_width=18, inv_table_width=18)
    est = estimate_layer(sm, 5.0)
    assert est["bram18"] == 3 * 1 + 1  # exp table read 5 times a cycle: 3 dual-port copies; one inv table
    bigger = estimate_layer(LayerShape(**{**sm.__dict__, "table_size": 4096}), 5.0)
    assert bigger["bram18"] == 4 * est["bram18"]


def test_totals_are_sums_and_latency_ns_is_cycles_times_the_clock():
    relu = LayerShape(name="relu", class_name="Activation", n_in=64, n_out=64, activation="relu")
    shapes = [dense(rf=2, zeros=10), relu, dense(n_in=64, n_out=5, rf=4)]
    est = estimate(shapes, clock_period_ns=4.0)
    for key in ("dsp", "lut", "ff", "bram18", "latency_cycles"):
        assert est["total"][key] == sum(layer[key] for layer in est["layers"])
    assert est["total"]["latency_ns"] == est["total"]["latency_cycles"] * 4.0
    assert est["total"]["ii_cycles"] == 4 and est["total"]["ii_ns"] == 16.0
    assert "estimate" in est["model"] and "synthesis" in est["model"]


def test_io_parallel_latency_is_the_timing_model_and_io_stream_adds_fifo_stages():
    shape = dense(rf=4)
    parallel = estimate_layer(shape, 5.0, "io_parallel")
    assert parallel["latency_cycles"] == dense_timing("fc", 16, 4).latency_cycles
    stream = estimate_layer(shape, 5.0, "io_stream")
    assert stream["latency_cycles"] > parallel["latency_cycles"] and stream["ii_cycles"] == 4
    pixels = estimate_layer(LayerShape(**{**shape.__dict__, "n_pixels": 9}), 5.0, "io_stream")
    assert pixels["ii_cycles"] == 4 * 9
    with pytest.raises(StageError, match="io_serial"):
        estimate_layer(shape, 5.0, "io_serial")


def test_layers_without_a_model_are_named_and_cost_nothing():
    conv = LayerShape(name="conv1", class_name="Conv2D", n_in=10, n_out=10)
    est = estimate([conv], 5.0)
    assert est["layers"][0]["modelled"] is False and est["total"]["dsp"] == 0
    assert "conv1" in est["model"]


@pytest.mark.parametrize("text,expected", [
    ("ap_fixed<16,6>", (16, 6, True)), ("ap_ufixed<8,3,AP_RND,AP_SAT>", (8, 3, False)),
    ("ap_int<4>", (4, 4, True)), ("ap_uint<1>", (1, 1, False)), ("fixed<29,14,TRN,WRAP,0>", (29, 14, True)),
    ("ap_fixed<8,-2>", (8, -2, True)),
])
def test_precision_strings_are_parsed(text, expected):
    assert parse_precision(text) == expected


def test_an_unreadable_precision_is_named():
    with pytest.raises(StageError, match="float"):
        parse_precision("float")


@pytest.mark.slow
def test_the_extractor_reads_a_converted_keras_mlp(tmp_path):
    hls4ml = pytest.importorskip("hls4ml")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc1"),
                              keras.layers.Activation("relu", name="relu1"), keras.layers.Dense(5, name="out"),
                              keras.layers.Activation("softmax", name="softmax")])
    weights = model.get_layer("fc1").get_weights()
    weights[0][:3] = 0.0  # 3 pruned inputs: 24 zero weights
    weights[0][3:] = np.where(weights[0][3:] == 0, 0.5, weights[0][3:])
    model.get_layer("fc1").set_weights(weights)
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    config["LayerName"]["fc1"]["Precision"]["weight"] = "ap_fixed<12,4>"
    config["LayerName"]["fc1"]["ReuseFactor"] = 4
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=config, output_dir=str(tmp_path / "hls"), backend="Vitis", io_type="io_parallel")

    shapes = {s.name: s for s in layers_from_hls_model(hls_model)}
    assert list(shapes) == ["fc1", "relu1", "out", "softmax"]
    fc1 = shapes["fc1"]
    assert (fc1.class_name, fc1.n_in, fc1.n_out, fc1.reuse_factor, fc1.strategy) == ("Dense", 16, 8, 4, "latency")
    assert (fc1.weight_width, fc1.weight_integer, fc1.input_width, fc1.input_integer) == (12, 4, 16, 6)
    assert fc1.n_zero_weights == 24 and fc1.accum_width > 16
    assert shapes["relu1"].activation == "relu" and shapes["softmax"].class_name == "Softmax"
    assert shapes["out"].input_width == shapes["relu1"].result_width

    est = estimate(list(shapes.values()), 5.0)
    assert est["layers"][0]["dsp"] == math.ceil((16 * 8 - 24) / 4) == 26
    assert est["layers"][2]["dsp"] == 8 * 5
    assert est["total"]["ii_cycles"] == 4
