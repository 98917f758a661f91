"""The converter's resource and latency estimate without vendor tools (docs/estimates.md): its structure
(multipliers, DSP tiles, BRAM, pixel loops) and the shape of its answers; the calibration's accuracy is pinned
in test_calibration.py."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from fpgaflow.errors import StageError
from fpgaflow_converter.calibration.designs import (
    DesignError,
    describe,
    keras_model,
    nodes_from_keras_config,
    parse,
)
from fpgaflow_converter.estimate import (
    bram18_for,
    dsp_per_multiplier,
    estimate,
    estimate_layer,
    operand_class,
    structure,
)
from fpgaflow_converter.layershapes import (
    LayerShape,
    Settings,
    layers_from_hls_model,
    parse_precision,
    shapes_from_nodes,
    zero_weights,
)

JET_TAGGER = "input:16 dense:64 relu dense:32 relu dense:32 relu dense:5 softmax"
CNN = "input:16x16x1 conv2d:8,3,1,same relu maxpool2d:2 conv2d:8,3 relu flatten dense:5 softmax"


def dense(n_in=16, n_out=64, bits=16, rf=1, zeros=0, strategy="latency", input_bits=16):
    return LayerShape(name="fc", class_name="Dense", n_in=n_in, n_out=n_out, input_width=input_bits, input_integer=6,
                      result_width=bits, result_integer=6, weight_width=bits, weight_integer=6, bias_width=bits,
                      bias_integer=6, accum_width=2 * bits + 4, accum_integer=16, reuse_factor=rf,
                      strategy=strategy, n_zero_weights=zeros)


def shapes(text, **settings):
    return shapes_from_nodes(parse(text), Settings(**settings))


@pytest.mark.parametrize("rf,zeros", [(1, 0), (1, 300), (4, 0), (4, 301), (8, 1000), (16, 7)])
def test_multipliers_are_the_nonzero_products_over_the_reuse_factor(rf, zeros):
    s = structure(dense(rf=rf, zeros=zeros), "io_parallel")
    assert s["multipliers"] == math.ceil((16 * 64 - zeros) / rf) and s["ii"] == rf


def test_dsps_fall_with_the_reuse_factor_and_with_pruning_and_latency_grows():
    by_rf = [estimate(shapes(JET_TAGGER, reuse_factor=rf), 5.0, backend="Vivado")["total"] for rf in (1, 2, 4, 16, 64)]
    dsps, cycles = [t["dsp"] for t in by_rf], [t["latency_cycles"] for t in by_rf]
    # from RF 2 every product has a DSP and they fall as 1/RF; at RF 1 only the weights that are not a shift
    # and an add get one (for a trained model's unknown weights, its usual share)
    assert dsps[1:] == sorted(dsps[1:], reverse=True) and dsps[-1] < dsps[1] / 20 and dsps[0] < 4256
    assert cycles == sorted(cycles) and cycles[-1] > 64, "four layers each loop RF times"
    pruned = estimate(shapes(JET_TAGGER, pruned=0.75), 5.0)["total"]["dsp"]
    assert pruned < 0.3 * estimate(shapes(JET_TAGGER), 5.0)["total"]["dsp"]


def test_narrow_products_use_no_dsp_and_wide_ones_cascade_tiles():
    assert operand_class(16, 16) == "wide" and operand_class(6, 16) == "mixed" and operand_class(8, 8) == "narrow"
    assert operand_class(4, 18) == "narrow"
    narrow = estimate_layer(dense(bits=4, input_bits=4), 5.0)
    assert narrow["dsp"] == 0 and narrow["lut"] > 16 * 64
    assert dsp_per_multiplier(27, 18) == dsp_per_multiplier(18, 27) == 1
    assert dsp_per_multiplier(32, 32) == 4  # ceil(32/27) * ceil(32/18)
    assert dsp_per_multiplier(18, 18, signed_a=False) == 1 and dsp_per_multiplier(27, 18, signed_b=False) == 2
    assert estimate_layer(dense(bits=32, input_bits=32), 5.0)["dsp"] > 3 * estimate_layer(dense(), 5.0)["dsp"]


def test_resource_strategy_keeps_a_large_layer_weights_in_bram_and_latency_strategy_does_not():
    big = dict(n_in=256, n_out=128, rf=64)
    resource = structure(dense(strategy="resource", **big), "io_parallel")
    assert resource["bram18"] == math.ceil(256 * 128 * 16 / 64 / 36)  # 64 words of 512 x 16 bits
    assert resource["multipliers"] == 256 * 128 // 64
    assert structure(dense(strategy="latency", **big), "io_parallel")["bram18"] == 0
    assert bram18_for(1024, 18) == 1 and bram18_for(512, 36) == 1 and bram18_for(2048, 18) == 2
    assert bram18_for(4, 72) == 2 and bram18_for(0, 8) == 0


def test_totals_are_sums_each_with_its_uncertainty():
    est = estimate(shapes(JET_TAGGER, reuse_factor=2), clock_period_ns=4.0)
    for key in ("dsp", "lut", "ff", "bram18", "latency_cycles"):
        assert est["total"][key] == sum(layer[key] for layer in est["layers"])
    assert est["total"]["latency_ns"] == est["total"]["latency_cycles"] * 4.0
    assert est["total"]["ii_cycles"] == 2 and est["total"]["ii_ns"] == 8.0
    uncertainty = est["total"]["uncertainty"]
    assert set(uncertainty) >= {"dsp", "lut", "ff", "latency_cycles", "latency_ns"}
    assert all(0 < value < 1 for value in uncertainty.values())
    assert "held-out" in est["model"] and "Vitis" in est["model"] and est["backend"] == "Vitis"


def test_the_backends_differ_and_an_unknown_one_is_refused():
    vivado, vitis = (estimate(shapes(JET_TAGGER), 5.0, backend=b)["total"] for b in ("Vivado", "Vitis"))
    assert vivado != vitis
    with pytest.raises(StageError, match="Quartus"):
        estimate(shapes(JET_TAGGER), 5.0, backend="Quartus")
    with pytest.raises(StageError, match="io_serial"):
        estimate_layer(dense(), 5.0, "io_serial")


def test_a_convolution_loops_over_its_pixels_and_streams_pay_per_input_pixel():
    parallel = estimate(shapes(CNN), 5.0)
    stream = estimate(shapes(CNN, io_type="io_stream"), 5.0, io_type="io_stream")
    conv = next(layer for layer in parallel["layers"] if layer["class_name"] == "Conv2D")
    assert conv["multipliers"] == 9 * 8 and conv["ii_cycles"] == 16 * 16, "one pixel per cycle over 16x16 outputs"
    assert parallel["total"]["latency_cycles"] > 16 * 16 * 0.5
    names = [layer["class_name"] for layer in stream["layers"]]
    assert names[0] == "ZeroPadding2D", "io_stream pads a 'same' convolution explicitly, as hls4ml does"
    assert not any(not layer["modelled"] for layer in parallel["layers"] + stream["layers"])


def test_layers_without_a_model_are_named_and_cost_nothing():
    est = estimate([LayerShape(name="gru1", class_name="GRU", n_in=10, n_out=10)], 5.0)
    assert est["layers"][0]["modelled"] is False and est["total"]["dsp"] == 0 and "gru1" in est["model"]


def test_weights_that_a_precision_casts_to_zero_are_counted():
    weights = np.array([0.0, 0.0004, -0.0004, 0.002, 0.5])  # ap_fixed<16,6>: a step of 2^-10 = 0.00098
    assert zero_weights(weights, 16, 6) == 2, "truncation toward minus infinity: -0.0004 becomes -0.00098"
    assert zero_weights(weights, 8, 3) == 3  # a step of 2^-5: 0.002 is zero too


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


@pytest.mark.parametrize("text", [JET_TAGGER, CNN, "input:128x4 conv1d:32,3 relu gavgpool1d dense:1 sigmoid",
                                  "input:28x28x3 dwconv2d:3,1,same bn sepconv2d:8,3 avgpool2d:2,same flatten dense:4"])
def test_a_design_line_round_trips_and_builds_the_same_keras_model(text):
    nodes = parse(text)
    assert parse(describe(nodes)) == nodes
    from_keras = nodes_from_keras_config(keras_model(text).get_config())
    assert [(n.kind, n.out_shape) for n in from_keras] == [(n.kind, n.out_shape) for n in nodes]


@pytest.mark.parametrize("text,message", [
    ("dense:4", "starts with input"), ("input:16 dense:x", "token 1 'dense:x'"),
    ("input:16 conv2d:8,3", "needs a 3-D input"), ("input:16 warp:3", "token 1 'warp:3'"),
    ("input:4x4x1 conv2d:8,5", "does not fit"),
])
def test_a_bad_design_line_names_the_token(text, message):
    with pytest.raises(DesignError, match=message):
        parse(text)


@pytest.mark.slow
@pytest.mark.parametrize("text,io_type", [(JET_TAGGER, "io_parallel"), (CNN, "io_parallel"), (CNN, "io_stream")])
def test_layers_from_a_design_line_are_those_hls4ml_converts(tmp_path, text, io_type):
    """The calibration rows' layers (from their design line) and the converter's (from hls4ml) agree."""
    hls4ml = pytest.importorskip("hls4ml")
    model = keras_model(text, "check")
    config = hls4ml.utils.config_from_keras_model(model, granularity="model", backend="Vitis",
                                                  default_precision="ap_fixed<16,6>")
    hls_model = hls4ml.converters.convert_from_keras_model(model, hls_config=config, backend="Vitis",
                                                           io_type=io_type, output_dir=str(tmp_path / "prj"))
    key = ("class_name", "n_in", "n_out", "n_pixels", "trips", "reuse_factor", "weight_width", "input_width")
    from_hls = [tuple(getattr(s, k) for k in key) for s in layers_from_hls_model(hls_model)
                if s.class_name not in ("Reshape", "Transpose")]
    from_line = [tuple(getattr(s, k) for k in key) for s in shapes(text, io_type=io_type)
                 if s.class_name not in ("Reshape", "Transpose")]
    assert from_hls == from_line


def test_signed_digits_are_the_non_adjacent_form():
    from fpgaflow_converter.layershapes import complex_weights, signed_digits

    codes = np.array([0, 1, 2, 3, 5, 7, 11, 1023, -7, 0b1010101])
    assert signed_digits(codes).tolist() == [0, 1, 1, 2, 2, 2, 3, 2, 2, 4]  # 11 = 16 - 4 - 1, 1023 = 1024 - 1
    # ap_fixed<16,6> codes are w * 1024: 0.5 and 0.75 (= 1 - 1/4) are shifts and adds, 0.6416015625 is not
    assert complex_weights(np.array([0.5, 0.75, -0.25, 0.6416015625]), 16, 6) == 1


def test_constant_weights_that_are_shifts_and_adds_use_no_dsp_until_they_are_reused():
    simple = replace(dense(), complex_weights=0)
    assert estimate_layer(simple, 5.0)["dsp"] == 0 and estimate_layer(simple, 5.0)["lut"] > 0
    assert estimate_layer(replace(simple, reuse_factor=2), 5.0)["dsp"] > 0, "a reused multiplier's weight varies"
    every = replace(dense(), complex_weights=16 * 64)
    assert estimate_layer(every, 5.0)["dsp"] > estimate_layer(dense(), 5.0)["dsp"], "unknown: a trained model's share"


def test_fpgaflow_estimate_reads_a_keras_file_and_its_weights(tmp_path, capsys):
    pytest.importorskip("keras")
    from fpgaflow.cli import main

    model = keras_model(JET_TAGGER, "tagger")
    weights = model.get_weights()
    weights[0][:] = 0.5  # the first layer's 1,024 weights: one signed digit each
    model.set_weights(weights)
    model.save(tmp_path / "tagger.keras")
    assert main(["estimate", str(tmp_path / "tagger.keras"), "--precision", "ap_fixed<16,6>", "ap_fixed<8,3>",
                 "--reuse", "1", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["precision"], r["reuse_factor"]) for r in rows] == [
        ("ap_fixed<16,6>", 1), ("ap_fixed<16,6>", 4), ("ap_fixed<8,3>", 1), ("ap_fixed<8,3>", 4)]
    assert rows[0]["dsp"] > rows[1]["dsp"] > 0
    assert rows[2]["dsp"] < 0.05 * rows[0]["dsp"], "8-bit products are built in LUTs (the softmax keeps its DSPs)"
    assert rows[0]["latency_cycles"] < rows[1]["latency_cycles"]
    assert rows[0]["dsp"] <= 64 * 32 + 32 * 32 + 32 * 5 + 40, "the first layer's weights are all shifts: no DSP"
    assert main(["estimate", str(tmp_path / "tagger.keras"), "--reuse", "2"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the title wraps at the terminal width
    assert "mean error on held-out synthesis reports" in printed and "ap_fixed<16,6>" in printed
    assert main(["estimate", str(tmp_path / "tagger.h5")]) != 0
    assert "expected a Keras v3 .keras file" in capsys.readouterr().err


@pytest.mark.slow
def test_fpgaflow_estimate_of_a_keras_file_equals_the_convert_stages(tmp_path):
    """The Keras-file path (no hls4ml) and the convert stage's path (hls4ml's model, 'auto' types as fpgaflow
    converts) read the same layers, accumulators and weights, so they give the same estimate."""
    hls4ml = pytest.importorskip("hls4ml")
    from fpgaflow_converter.config import SOFTMAX_TABLE_SIZE
    from fpgaflow_converter.estimate_file import grid, read_keras_file

    model = keras_model(JET_TAGGER, "tagger")
    model.save(tmp_path / "tagger.keras")
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis",
                                                  default_precision="ap_fixed<16,6>")
    softmax = {layer.name for layer in model.layers if layer.get_config().get("activation") == "softmax"}
    for name, layer in config["LayerName"].items():  # as fpgaflow's converter: results at the precision,
        if "result" in layer.get("Precision", {}):  # its softmax table size
            layer["Precision"]["result"] = "ap_fixed<16,6>"
        if name in softmax:
            layer["TableSize"] = SOFTMAX_TABLE_SIZE
    hls_model = hls4ml.converters.convert_from_keras_model(model, hls_config=config, backend="Vitis",
                                                           io_type="io_parallel", output_dir=str(tmp_path / "prj"))
    converted = estimate(layers_from_hls_model(hls_model), 5.0)["total"]
    nodes, kernels = read_keras_file(tmp_path / "tagger.keras")
    from_file = grid(nodes, kernels, ["ap_fixed<16,6>"], [1], strategy="Latency", io_type="io_parallel",
                     backend="Vitis", clock_period_ns=5.0)[0]
    for key in ("dsp", "lut", "ff", "bram18", "latency_cycles", "ii_cycles"):
        assert from_file[key] == pytest.approx(converted[key], rel=0.02), key


def test_a_stream_layer_costs_one_pixels_logic_and_stream_loops_overlap():
    stream = estimate(shapes(CNN, io_type="io_stream"), 5.0, io_type="io_stream")
    relu = next(layer for layer in stream["layers"] if layer["class_name"] == "Activation")
    parallel = estimate(shapes(CNN), 5.0)
    relu_parallel = next(layer for layer in parallel["layers"] if layer["class_name"] == "Activation")
    assert relu["lut"] * 50 < relu_parallel["lut"], "one pixel of 8 channels a cycle, not 16x16x8 at once"
    loops = sorted(layer["ii_cycles"] for layer in stream["layers"])
    assert loops[-1] <= stream["total"]["latency_cycles"] < sum(loops), "a dataflow pipeline: loops overlap"


def test_the_resource_strategy_takes_the_reuse_factor_hls4ml_would():
    """hls4ml moves a Resource-strategy layer's reuse factor to the closest one its kernel accepts; the estimate
    of a design line does the same, checked against hls4ml's own backend."""
    backend = pytest.importorskip("hls4ml.backends").get_backend("Vivado")
    from fpgaflow_converter.layershapes import valid_reuse_factor

    rng = np.random.default_rng(7)
    for n_in, n_out, asked in zip(rng.integers(1, 300, 200), rng.integers(1, 64, 200), rng.integers(1, 400, 200),
                                  strict=True):
        valid = backend.get_valid_reuse_factors(int(n_in), int(n_out))
        expected = asked if asked in valid else backend.get_closest_reuse_factor(valid, int(asked))
        assert valid_reuse_factor(int(n_in), int(n_out), int(asked)) == expected, (n_in, n_out, asked)
    mnist = shapes("input:28x28x1 conv2d:4,3 relu maxpool2d:4 conv2d:8,3 relu maxpool2d:2 flatten dense:10",
                   reuse_factor=64, strategy="Resource", io_type="io_stream")
    assert [s.reuse_factor for s in mnist if s.class_name in ("Conv2D", "Dense")] == [36, 72, 64]


def test_a_stream_layer_at_rf_above_one_holds_every_product_and_its_window():
    """In io_stream at RF > 1 the pixel loop (II = RF) keeps every product of the kernel in registers until the
    adder tree sums them (the MLP 4-128-3 of the calibration table: 14,632 FFs in io_stream at RF 8, 2,994 in
    io_parallel), and a stream convolution or pooling layer keeps its window in registers."""
    mlp = "input:4 dense:128 relu dense:3 softmax"
    stream, parallel = (estimate(shapes(mlp, reuse_factor=8, io_type=io), 25.0, io_type=io, backend="Vivado")
                        for io in ("io_stream", "io_parallel"))
    assert stream["total"]["ff"] > 3 * parallel["total"]["ff"]
    pool = next(layer for layer in estimate(shapes(CNN, io_type="io_stream"), 5.0, io_type="io_stream")["layers"]
                if layer["class_name"] == "Pooling2D")
    assert pool["ff"] >= 2 * 2 * 8 * 16, "the 2x2 window of 8 channels, 16 bits each"


def test_an_estimate_beyond_the_fitted_reports_says_so():
    vivado = estimate(shapes(JET_TAGGER), 5.0, backend="Vivado")
    assert vivado["total"]["caveats"] == [] and "extrapolated" not in vivado["model"]
    wide = estimate(shapes(JET_TAGGER, precision="ap_fixed<32,12>"), 5.0, backend="Vitis")
    assert any("4 DSP48 tiles" in caveat for caveat in wide["total"]["caveats"]) and "extrapolated" in wide["model"]
    reused = estimate(shapes(JET_TAGGER, reuse_factor=4, strategy="Resource"), 5.0, backend="Vitis")
    assert any("no Vitis report fitted on has these features" in c for c in reused["total"]["caveats"])
