"""The convert stage as users run it: per-layer types reach the generated HLS, the estimate and the
per-layer trace are written, the exported project holds what the emulation ran, and a layer built to
overflow fails the fidelity check with a diagnosis that names it."""

from __future__ import annotations

import json
import re
import tarfile

import pytest

from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import TrialDir
from tests.conftest import fpgaflow

pytestmark = pytest.mark.slow

BASE = {"dataset": {"name": "jets", "samples": 8000, "seed": 6}, "model": {"layers": [16, 8], "l1": 0.0},
        "train": {"epochs": 3, "batchSize": 128, "learningRate": 0.005}}


def _trained(tmp_path, name: str, hls: dict) -> TrialDir:
    td = TrialDir.create(tmp_path / name, "convert", name, {}, ExperimentSpec.model_validate({**BASE, "hls": hls}))
    fpgaflow("train", "--trial-dir", str(td.root))
    return td


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    hls = {"precision": "ap_fixed<16,6>", "reuseFactor": 1,
           "layers": {"fc1": {"precision": {"weight": "ap_fixed<8,3,AP_RND,AP_SAT>", "result": "ap_fixed<14,5>"},
                              "reuseFactor": 3}}}
    td = _trained(tmp_path_factory.mktemp("convert"), "t00", hls)
    fpgaflow("convert", "--trial-dir", str(td.root))
    return td


def _generated_types(td: TrialDir) -> dict[str, str]:
    """Each layer's weight and result type as the generated HLS declares them (defines.h's typedefs; the
    result type of a layer is the output type of its call in myproject.cpp, which names the layer)."""
    firmware = td.stage_dir("convert") / "hls4ml_prj" / "firmware"
    typedefs = {name: kind for kind, name in re.findall(r"typedef\s+(.+?)\s+(\w+);", (firmware / "defines.h").read_text())}
    types = {name: kind for name, kind in typedefs.items() if name.endswith("_weight_t")}
    for out_type, layer in re.findall(r"nnet::\w+<\w+, (\w+), \w+>\(.*\); // (\w+)", (firmware / "myproject.cpp").read_text()):
        types[f"{layer}_result_t"] = typedefs[out_type]
    return types


def test_per_layer_types_reach_the_generated_hls(converted):
    types = _generated_types(converted)
    assert types["fc1_weight_t"] == "ap_fixed<8,3,AP_RND,AP_SAT,0>" and types["fc1_result_t"] == "ap_fixed<14,5>"
    assert types["fc2_weight_t"] == "ap_fixed<16,6>" and types["fc2_result_t"] == "ap_fixed<16,6>", "the others keep hls.precision"


def test_an_invalid_reuse_factor_is_corrected_and_reported(converted):
    result = converted.result("convert")
    assert result["reuse_factor_corrections"] == [{"layer": "fc1", "asked": 3, "used": 2, "shape": [16, 16]}]
    hls_config = json.loads((converted.stage_dir("convert") / "hls_config.json").read_text())
    assert hls_config["LayerName"]["fc1"]["ReuseFactor"] == 2


def test_the_estimate_and_the_trace_are_written_and_reported(converted):
    from fpgaflow.report import markdown
    from fpgaflow.summary import trial_summary

    out = converted.stage_dir("convert")
    estimate = json.loads((out / "estimate.json").read_text())
    fc2 = next(layer for layer in estimate["layers"] if layer["name"] == "fc2")
    # a 16-bit 16x8 dense layer at reuse factor 1: a multiplier for each weight not cast to zero, most in DSPs
    assert fc2["multipliers"] == fc2["nonzero_weights"] and 100 <= fc2["nonzero_weights"] <= 16 * 8
    assert fc2["operands"] == "wide" and 0 < fc2["dsp"] <= fc2["multipliers"]
    assert estimate["total"]["dsp"] == sum(layer["dsp"] for layer in estimate["layers"])
    assert estimate["backend"] == "Vitis" and set(estimate["total"]["uncertainty"]) >= {"dsp", "latency_ns"}
    fidelity = json.loads((out / "fidelity.json").read_text())
    assert [row["layer"] for row in fidelity["layers"]][:2] == ["fc1", "relu1"]
    diagnosis = fidelity["diagnosis"]  # fc1's 8-bit weights may lose more than the diagnosis lets pass
    assert diagnosis is None or (diagnosis["layer"] == "fc1" and "hls.layers.fc1" in diagnosis["message"]), diagnosis
    assert set(fidelity["per_class_auc"]["emulated"]) == {"g", "q", "w", "z", "t"}
    # the fidelity check ran on the vectorized emulator, after it matched hls4ml's C simulation
    emulation = fidelity["emulation"]
    assert emulation["path"] == "vectorized" and "fallback" not in emulation
    assert emulation["checked_samples"] == min(fidelity["samples"], 2000) and set(emulation["layers"].values()) == {"float64"}
    assert emulation["samples_per_second"] > emulation["hls4ml_samples_per_second"]
    assert (out / "profiling.png").read_bytes().startswith(b"\x89PNG")
    report = markdown("convert", [trial_summary(converted)], {})
    assert "## FPGA resources and latency" in report and f"| {estimate['total']['dsp']} |" in report
    assert "t00/convert/profiling.png" in report and "reuse factor 3 of `fc1`" in report


def test_the_exported_project_holds_the_weights_the_emulation_ran(converted):
    out = converted.stage_dir("convert")
    manifest = json.loads((out / "emulator" / "emulator.json").read_text())
    weights = out / "hls4ml_prj" / "firmware" / "weights"
    assert manifest["weights_dir"] == str(weights.resolve())
    with tarfile.open(out / "hls4ml_prj.tar.gz") as tar:
        exported = {m.name.split("/firmware/weights/")[1]: tar.extractfile(m).read()
                    for m in tar.getmembers() if "/firmware/weights/" in m.name and m.isfile()}
    assert exported and exported == {p.name: p.read_bytes() for p in weights.iterdir()}


def test_a_layer_built_to_overflow_fails_the_check_naming_it(tmp_path):
    hls = {"precision": "ap_fixed<16,6>", "minAgreement": 0.95, "layers": {"fc2": {"precision": {"result": "ap_fixed<5,1>"}}}}
    td = _trained(tmp_path, "t01", hls)
    done = fpgaflow("convert", "--trial-dir", str(td.root), check=False)
    assert done.returncode != 0
    error = td.error("convert")
    assert error["reason"] == "FidelityCheckFailed", error
    assert "fc2 overflows" in error["message"] and "hls.layers.fc2.precision.result" in error["message"], error


def test_a_binary_model_is_exported_in_the_bnn_layout(tmp_path):
    from fpgaflow_converter.export import read_bnn

    spec = {"dataset": {"name": "digits", "seed": 3}, "model": {"type": "binary", "layers": [32]},
            "train": {"epochs": 2, "batchSize": 64, "learningRate": 0.01}}
    td = TrialDir.create(tmp_path / "t02", "convert", "t02", {}, ExperimentSpec.model_validate(spec))
    fpgaflow("train", "--trial-dir", str(td.root))
    fpgaflow("convert", "--trial-dir", str(td.root))
    result = td.result("convert")
    assert result["export"] == "bnn" and "does not convert" in result["note"] and "fpga target" in result["note"], result
    bnn = read_bnn(td.stage_dir("convert") / "bnn")
    assert [layer["weights"].shape for layer in bnn["layers"]] == [(64, 32), (32, 10)]
    assert [(layer["pe"], layer["simd"]) for layer in bnn["layers"]] == [(32, 64), (16, 8)]  # LFC's
    assert (td.stage_dir("convert") / "bnn" / "classes.txt").read_text().splitlines() == [str(c) for c in range(10)]

    from fpgaflow.errors import TargetUnavailable
    from fpgaflow.trial import model_versions
    from fpgaflow_inference.backends import load_backend

    [version] = model_versions(td)
    with pytest.raises(TargetUnavailable, match="BNN-PYNQ parameter folder"):
        load_backend(version, "fpga")


def test_a_layer_hls4ml_cannot_convert_fails_the_stage_naming_it():
    """hls4ml has no converter for Conv2DTranspose: the stage's error names the layer, its class and what
    hls4ml said."""
    import hls4ml
    import keras

    from fpgaflow.errors import StageError
    from fpgaflow_converter.convert import unconvertible

    inputs = keras.Input((8, 8, 1), name="features")
    x = keras.layers.Conv2DTranspose(2, 3, name="upsample")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="output")(x))
    with pytest.raises(Exception) as raised:  # hls4ml's configuration already fails, as the stage's does
        config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
        hls4ml.converters.convert_from_keras_model(model, hls_config=config, backend="Vitis", io_type="io_stream")
    error = unconvertible(model, raised.value, hls4ml.__version__, "io_stream")
    assert isinstance(error, StageError) and error.reason == "UnsupportedLayer"
    message = str(error)
    assert message.startswith(f"hls4ml {hls4ml.__version__} cannot convert layer 'upsample' (Conv2DTranspose) with io_stream")
    assert "hls4ml said: ValueError:" in message and "not found in registry" in message
