"""Per-layer trace of the hls4ml emulation: the first layer whose error jumps, overflow or resolution."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.spec import HLSSpec

pytestmark = pytest.mark.slow

N_CLASSES = 5


@pytest.fixture(scope="module")
def jets():
    from tests.synthetic_jets import synthetic_jets

    x, y = synthetic_jets(3000, seed=11)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def mlp(jets):
    """16-16-8-5, named as the trainer names its layers, trained one epoch."""
    import keras

    keras.utils.set_random_seed(3)
    x, y = jets
    inputs = keras.Input((16,), name="features")
    h = keras.layers.Activation("relu", name="relu1")(keras.layers.Dense(16, name="fc1")(inputs))
    h = keras.layers.Activation("relu", name="relu2")(keras.layers.Dense(8, name="fc2")(h))
    out = keras.layers.Activation("softmax", name="softmax")(keras.layers.Dense(N_CLASSES, name="output")(h))
    model = keras.Model(inputs, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    return model


def _convert(model, hls: HLSSpec, out):
    """As the convert stage does: hls4ml's per-layer config with the spec applied, compiled."""
    import hls4ml

    from fpgaflow_converter.config import hls_config
    from fpgaflow_converter.trace import enable_trace

    base = hls4ml.utils.config_from_keras_model(model, granularity="name", default_precision=hls.precision, backend=hls.backend)
    config = hls_config(base, hls, N_CLASSES)
    hls_model = hls4ml.converters.convert_from_keras_model(
        model, hls_config=config, output_dir=str(out), backend=hls.backend, io_type=hls.io_type
    )
    enable_trace(hls_model)
    hls_model.compile()
    return hls_model, config


def _spec(layers: dict | None = None) -> HLSSpec:
    return HLSSpec.model_validate({"precision": "ap_fixed<16,6>", "layers": layers or {}})


@pytest.fixture(scope="module")
def wide(mlp, tmp_path_factory):
    return _convert(mlp, _spec(), tmp_path_factory.mktemp("wide"))


@pytest.fixture(scope="module")
def overflowing(mlp, tmp_path_factory):
    """fc2's weights scaled up so that its outputs exceed 1, and its result typed ap_fixed<6,1> ([-1, 0.97])."""
    import keras

    model = keras.models.clone_model(mlp)
    model.set_weights(mlp.get_weights())
    fc2 = model.get_layer("fc2")
    kernel, bias = fc2.get_weights()
    fc2.set_weights([kernel * 4, bias * 4])
    return (model, *_convert(model, _spec({"fc2": {"precision": {"result": "ap_fixed<6,1>"}}}), tmp_path_factory.mktemp("overflow")))


def test_a_wide_type_everywhere_traces_every_layer_and_diagnoses_nothing(mlp, wide, jets):
    from fpgaflow_converter.trace import diagnose, layer_trace

    hls_model, config = wide
    x = jets[0][:300]
    trace = layer_trace(mlp, hls_model, x, config)
    assert [row["layer"] for row in trace] == ["fc1", "relu1", "fc2", "relu2", "output", "softmax"]
    fc1 = trace[0]
    assert (fc1["result_type"]["width"], fc1["result_type"]["integer"], fc1["result_type"]["signed"]) == (16, 6, True)
    assert fc1["result_type"]["min"] == -32 and fc1["result_type"]["max"] == 32 - 2**-10 and fc1["result_type"]["lsb"] == 2**-10
    assert fc1["overflow_fraction"] == 0 and fc1["relative_error"] < 0.01
    assert all(row["relative_error"] < 0.05 for row in trace), [(r["layer"], r["relative_error"]) for r in trace]
    # the trace's last layer is the emulation's prediction
    emulated = np.asarray(hls_model.predict(np.ascontiguousarray(x)))
    reference = mlp.predict(x, verbose=0)
    assert trace[-1]["max_abs_error"] == pytest.approx(float(np.abs(emulated - reference).max()), rel=1e-5)
    assert diagnose(trace) is None
    assert all(layer["Trace"] for layer in config["LayerName"].values())


def test_a_layer_built_to_overflow_is_named_with_its_range(overflowing, jets):
    from fpgaflow_converter.trace import diagnose, layer_trace

    model, hls_model, config = overflowing
    trace = layer_trace(model, hls_model, jets[0][:300], config)
    by_name = {row["layer"]: row for row in trace}
    assert by_name["fc1"]["relative_error"] < 0.01
    assert by_name["fc2"]["overflow_fraction"] > 0.05 and by_name["fc2"]["float_max"] > 1
    found = diagnose(trace)
    assert found["layer"] == "fc2" and found["kind"] == "overflow"
    fc2 = by_name["fc2"]
    assert found["type_max"] == pytest.approx(1 - 2**-5)
    assert abs(found["largest"]) == max(abs(fc2["float_min"]), abs(fc2["float_max"])) > 2
    assert "ap_fixed<6,1>" in found["message"] and "hls.layers.fc2.precision.result" in found["message"]


def test_too_few_fractional_bits_are_diagnosed_as_resolution(mlp, jets, tmp_path):
    from fpgaflow_converter.trace import diagnose, layer_trace

    hls_model, config = _convert(mlp, _spec({"fc2": {"precision": {"result": "ap_fixed<12,10>"}}}), tmp_path / "prj")
    trace = layer_trace(mlp, hls_model, jets[0][:300], config)
    found = diagnose(trace)
    assert found is not None and found["layer"] == "fc2" and found["kind"] == "resolution", trace
    assert found["lsb"] == 0.25 and "fractional bits" in found["message"]


def test_a_trace_without_tracing_built_in_recompiles_and_matches(mlp, jets, tmp_path):
    """layer_trace on a model compiled the plain way (as convert.run does today) turns tracing on itself."""
    import hls4ml

    from fpgaflow_converter.config import hls_config
    from fpgaflow_converter.trace import layer_trace

    hls = _spec()
    base = hls4ml.utils.config_from_keras_model(mlp, granularity="name", default_precision=hls.precision, backend=hls.backend)
    hls_model = hls4ml.converters.convert_from_keras_model(mlp, hls_config=hls_config(base, hls, N_CLASSES), output_dir=str(tmp_path / "p"))
    hls_model.compile()
    x = jets[0][:50]
    before = np.asarray(hls_model.predict(np.ascontiguousarray(x)))
    trace = layer_trace(mlp, hls_model, x)
    assert len(trace) == 6
    assert np.array_equal(np.asarray(hls_model.predict(np.ascontiguousarray(x))), before), "tracing changes no prediction"


def test_profiling_plot_is_a_png(overflowing, jets, tmp_path):
    from fpgaflow_converter.trace import profiling_plot

    model, hls_model, _ = overflowing
    path = profiling_plot(model, hls_model, jets[0][:300], tmp_path / "profiling.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_type_info_gives_the_representable_range_and_lsb():
    from hls4ml.model.types import FixedPrecisionType, IntegerPrecisionType

    from fpgaflow_converter.trace import _ap_name, type_info

    signed = type_info(FixedPrecisionType(8, 3, True, "RND", "SAT"))
    assert (signed["min"], signed["max"], signed["lsb"]) == (-4.0, 4 - 2**-5, 2**-5)
    assert (signed["rounding"], signed["saturation"]) == ("RND", "SAT") and _ap_name(signed) == "ap_fixed<8,3,AP_RND,AP_SAT>"
    unsigned = type_info(FixedPrecisionType(6, 2, False))
    assert (unsigned["min"], unsigned["max"], unsigned["lsb"]) == (0.0, 4 - 2**-4, 2**-4) and _ap_name(unsigned) == "ap_ufixed<6,2>"
    integer = type_info(IntegerPrecisionType(4, True))
    assert (integer["min"], integer["max"], integer["lsb"]) == (-8.0, 7.0, 1.0) and _ap_name(integer) == "ap_int<4>"


def test_per_class_auc_is_the_trainers():
    from fpgaflow import scores
    from fpgaflow_converter import convert
    from fpgaflow_trainer import epochstats

    assert convert.per_class_auc is epochstats.per_class_auc is scores.per_class_auc
