"""The Brainwave recipe end to end (examples/brainwave-top-tagger.yaml on a small sample): a residual CNN trained
in float, fine-tuned in fixed point, converted and served (version 1); its head retrained on the featurizer's
outputs on the training set as the firmware computes them, converted with the featurizer and served beside it
(version 2); the report gives the served accuracy of both."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import yaml
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, model_service_pb2_grpc

from tests.conftest import ROOT, fpgaflow, serving

pytestmark = pytest.mark.slow

NAME = "brainwave-top-tagger"
SMALL = {  # the example's recipe and network on a sample the suite can afford
    "dataset": {"samples": 2000, "imageSize": 16},
    "train": {"epochs": 2, "batchSize": 64},
    "quantize": {"epochs": 1, "retrainHead": {"epochs": 3, "learningRate": 0.001, "batchSize": 64}},
    "benchmark": {"concurrency": [1], "requestsPerClient": 20, "batchSizes": [1], "warmup": 2},
}


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    manifest = yaml.safe_load((ROOT / "examples" / f"{NAME}.yaml").read_text())
    assert manifest["spec"]["quantize"]["retrainHead"] and manifest["spec"]["model"]["type"] == "resnet"
    manifest["spec"] = merged(manifest["spec"], SMALL)
    base = tmp_path_factory.mktemp("brainwave")
    (base / "brainwave.yaml").write_text(yaml.safe_dump(manifest))
    done = fpgaflow("run", str(base / "brainwave.yaml"), "--home", str(base / "home"), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return base / "home" / "experiments" / NAME


def test_the_head_is_retrained_on_the_firmware_and_converted_bit_exactly(run):
    convert = json.loads((run / "t00" / "convert" / "result.json").read_text())
    retrained = convert["retrained"]
    assert retrained["head_from"] == "fc1" and retrained["train_samples"] == 1600 and retrained["epochs"] == 3
    for version in (convert["fidelity"], retrained["fidelity"]):  # QAT models: hls4ml's emulation == Keras
        assert version["bit_exact"] and version["emulation"]["path"] == "vectorized"
    assert retrained["emulator"] == "convert/retrained/emulator"
    head = retrained["head_accuracy_on_firmware_features"]
    assert 0.5 < head["before"] <= 1 and 0.5 < head["after"] <= 1


def test_only_the_head_changed_and_it_was_trained_on_the_firmwares_featurizer_outputs(run):
    import keras

    from fpgaflow.emulation.project import load_project
    from fpgaflow.keras_model import load_model
    from fpgaflow.preprocess import Scaler

    trial = run / "t00"
    before, after = load_model(trial / "train" / "model.keras"), load_model(trial / "convert" / "retrained" / "model.keras")
    trained = [layer for layer in before.layers if layer.trainable_weights]
    assert {layer.name for layer in trained} >= {"feat_conv1a", "feat_skip2", "fc1", "output"}
    for layer in trained:  # the featurizer's weights as fine-tuned, the head's retrained
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), after.get_layer(layer.name).get_weights(),
                                                        strict=True))
        assert same == layer.name.startswith("feat_"), layer.name
    # what the head reads in the firmware is what the fixed-point featurizer computes in Keras, bit for bit
    x = np.load(trial / "train" / "trainset.npz")["x"][:300]
    x = Scaler.load(trial / "train" / "scaler.json").apply(x)
    firmware = load_project(trial / "convert" / "hls4ml_prj").inputs_of(x, "fc1")
    featurizer = keras.Model(before.inputs, before.get_layer("feat_flatten").output)
    assert np.array_equal(firmware, np.asarray(featurizer.predict(x, verbose=0), dtype=np.float64))
    assert np.ptp(firmware) > 0


def test_the_service_serves_both_versions_and_the_report_compares_them(run):
    bench = json.loads((run / "t00" / "bench" / "results.json").read_text())
    convert = json.loads((run / "t00" / "convert" / "result.json").read_text())
    for target in ("cpu", "fpga"):
        versions = bench["targets"][target]["accuracy_served_versions"]
        assert set(versions) == {"1", "2"} and bench["targets"][target]["accuracy_served"] == versions["2"]
    fpga = bench["targets"]["fpga"]["accuracy_served_versions"]
    assert fpga["1"] == pytest.approx(convert["fidelity"]["accuracy_emulated"], abs=1e-12)
    assert fpga["2"] == pytest.approx(convert["retrained"]["fidelity"]["accuracy_emulated"], abs=1e-12)
    report = (run / "report.md").read_text()
    assert "## Before and after retraining the head on the firmware's featurizer outputs" in report
    change = fpga["2"] - fpga["1"]
    assert f"| t00 | fpga | {fpga['1']:.4f} | {fpga['2']:.4f} | {change:+.4f} |" in report


def test_a_client_asks_each_version_by_number(run):
    from fpgaflow.emulation.library import load_emulator
    from fpgaflow.preprocess import Scaler
    from tests.service.test_image_serving import tf_predict_version

    trial = run / "t00"
    images = np.load(trial / "train" / "testset.npz")["x"][:64].astype(np.float32)
    scaled = Scaler.load(trial / "train" / "scaler.json").apply(images)
    want = {1: load_emulator(trial / "convert" / "emulator").predict(scaled),
            2: load_emulator(trial / "convert" / "retrained" / "emulator").predict(scaled)}
    assert not np.array_equal(want[1], want[2])
    with serving(trial, {"fpga": ()}) as servers:
        address = servers["fpga"]["address"]
        for version in (1, 2):
            assert np.array_equal(tf_predict_version(address, NAME, images, version), want[version])
        assert np.array_equal(tf_predict_version(address, NAME, images, None), want[2])  # the latest by default
        with grpc.insecure_channel(address) as channel:
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=NAME)), timeout=30)
        assert [s.version for s in status.model_version_status] == [1, 2]
        with pytest.raises(grpc.RpcError) as info:
            tf_predict_version(address, NAME, images, 3)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "loaded versions: 1, 2" in info.value.details()
