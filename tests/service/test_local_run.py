"""A real local run of a small experiment, end to end, and its servers called by stock clients."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from fpgaflow.preprocess import Scaler
from fpgaflow_inference.tensors import from_array, to_array
from tests.conftest import ROOT, fpgaflow

pytestmark = pytest.mark.slow


def predict(address: str, x: np.ndarray, model: str = "tiny-jets") -> np.ndarray:
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["features"].CopyFrom(from_array(x))
        return to_array(stub.Predict(request, timeout=60).outputs["probabilities"], "probabilities")


@pytest.fixture(scope="module")
def testset(tiny_run):
    data = np.load(tiny_run["trial"] / "train" / "testset.npz")
    return data["x"], data["y"]


def test_run_succeeds_and_prints_the_tables(tiny_run):
    done = tiny_run["result"]
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "accuracy on the test set" in out and "latency and throughput" in out
    assert "unavailable" in out, "gpu must be reported unavailable on a machine without one"
    assert "data: jets, simulated with Pythia 8.317.2 and FastJet 3.5.2, no detector simulation (20,000 jets" in out


def test_report_numbers_are_sane(tiny_run):
    trial = tiny_run["trial"]
    train = json.loads((trial / "train" / "result.json").read_text())
    fidelity = json.loads((trial / "convert" / "fidelity.json").read_text())
    results = json.loads((trial / "bench" / "results.json").read_text())
    # simulated jets: W and Z, and q and g, overlap; far from chance (0.2), not separable
    assert 0.5 <= train["accuracy"] <= 0.9
    assert train["dataset"]["simulated"] is True
    assert fidelity["argmax_agreement"] >= 0.95
    assert abs(fidelity["accuracy_emulated"] - fidelity["accuracy_float"]) < 0.03
    assert results["targets"]["gpu"]["status"] == "unavailable"
    assert "GPU" in results["targets"]["gpu"]["reason"]
    for target in ("cpu", "fpga"):
        info = results["targets"][target]
        assert info["status"] == "ready"
        assert abs(info["accuracy_served"] - train["accuracy"]) < 0.05
        runs = [r for r in results["runs"] if r["target"] == target]
        assert [r["concurrency"] for r in runs] == [1, 3]
        for r in runs:
            assert r["ok"] == r["requests"] == r["concurrency"] * 60 and r["errors"] == {}
            assert 0 < r["p50_ms"] <= r["p99_ms"] < 5000
            assert r["throughput_rps"] > 0
    rows = list(csv.DictReader((trial / "bench" / "results.csv").open()))
    assert len(rows) == 4
    for png in ("train/training.png", "bench/latency.png", "bench/throughput.png"):
        assert (trial / png).read_bytes()[:4] == b"\x89PNG"
    report = (tiny_run["folder"] / "report.md").read_text()
    assert "| t00 | cpu |" in report and "unavailable" in report
    timing = json.loads((trial / "convert" / "timing.json").read_text())
    assert f"(device, modelled: {timing['latency_ns']:g} ns, II {timing['ii_ns']:g} ns)" in report
    assert timing["latency_cycles"] == sum(layer["latency_cycles"] for layer in timing["layers"]) > 0
    assert [layer["name"] for layer in timing["layers"]] == ["fc1", "relu1", "fc2", "relu2", "output", "softmax"]


def test_run_again_resumes_without_redoing_anything(tiny_run):
    before = (tiny_run["trial"] / "bench" / "result.json").stat().st_mtime_ns
    done = fpgaflow("run", str(tiny_run["manifest"]), "--home", str(tiny_run["home"]))
    assert "accuracy on the test set" in done.stdout
    assert (tiny_run["trial"] / "bench" / "result.json").stat().st_mtime_ns == before


def test_the_report_regenerates_from_the_store_alone(tiny_run):
    """`fpgaflow report NAME` rewrites what the run wrote, from the trial folders alone (no servers run now)."""
    folder = tiny_run["folder"]
    written = {name: (folder / name).read_text() for name in ("report.md", "report.html")}
    hist = folder / "t00" / "bench" / "latency_hist.png"
    for name in written:
        (folder / name).unlink()
    hist.unlink()
    done = fpgaflow("report", "tiny-jets", "--home", str(tiny_run["home"]))
    assert "report.md" in done.stdout
    assert {name: (folder / name).read_text() for name in written} == written
    assert hist.read_bytes().startswith(b"\x89PNG")
    assert "| cpu |" in written["report.md"] and "<table>" in written["report.html"]


def test_run_store_lists_shows_and_exports(tiny_run):
    home = str(tiny_run["home"])
    assert "tiny-jets" in fpgaflow("list", "--home", home).stdout
    shown = json.loads(fpgaflow("show", "tiny-jets", "--json", "--home", home).stdout)
    assert shown["phase"] == "Succeeded" and shown["trials"][0]["phase"] == "Succeeded"
    rows = list(csv.DictReader(io.StringIO(fpgaflow("export", "--csv", "--home", home).stdout)))
    assert rows[0]["experiment"] == "tiny-jets" and rows[0]["phase"] == "Succeeded"
    assert float(rows[0]["accuracy_float"]) > 0.5
    # provenance: the code's git state and the host, in the trial folder and in the run store
    git = json.loads((tiny_run["trial"] / "train" / "git.json").read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git["code"]["commit"] == head and git["fpgaflow"]
    host = json.loads((tiny_run["trial"] / "train" / "host.json").read_text())
    assert host["packages"]["hls4ml"] and host["cpus"] >= 1
    assert shown["trials"][0]["provenance"]["git"] == git
    from fpgaflow.store import RunStore

    stored = RunStore(tiny_run["home"]).experiment("tiny-jets")["trials"][0]["results"]["provenance"]
    assert stored == {"git": git, "host": host}
    missing = fpgaflow("show", "nope", "--home", home, check=False)
    assert missing.returncode == 2 and "no experiment named 'nope'" in missing.stderr


def test_fpga_endpoint_equals_hls4ml_predict_exactly(tiny_run, servers, testset):
    import hls4ml

    x_raw = testset[0][:300]
    scaler = Scaler.load(tiny_run["trial"] / "train" / "scaler.json")
    hls_model = hls4ml.converters.link_existing_project(str(tiny_run["trial"] / "convert" / "hls4ml_prj"))
    hls_model.compile()
    expected = np.asarray(hls_model.predict(np.ascontiguousarray(scaler.apply(x_raw))))
    served = predict(servers["fpga"]["address"], x_raw)
    assert served.dtype == np.float32 and served.shape == expected.shape
    assert np.array_equal(served, expected)
    # one sample at a time gives the same bits as a batch
    assert np.array_equal(predict(servers["fpga"]["address"], x_raw[:1]), expected[:1])


def test_stock_tf_serving_client_gets_the_models_predictions_from_cpu(tiny_run, servers, testset):
    import keras

    x_raw = testset[0][:500]
    scaler = Scaler.load(tiny_run["trial"] / "train" / "scaler.json")
    model = keras.models.load_model(tiny_run["trial"] / "train" / "model.keras")
    expected = model.predict(scaler.apply(x_raw), verbose=0)
    served = predict(servers["cpu"]["address"], x_raw)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_model_metadata_describes_the_signature(servers):
    with grpc.insecure_channel(servers["cpu"]["address"]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "tiny-jets"
        response = stub.GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    sig = sig_map.signature_def["serving_default"]
    assert [d.size for d in sig.inputs["features"].tensor_shape.dim] == [-1, 16]
    assert [d.size for d in sig.outputs["probabilities"].tensor_shape.dim] == [-1, 5]


@pytest.mark.parametrize(
    "model, x, code, words",
    [
        ("other", np.zeros((1, 16), np.float32), grpc.StatusCode.NOT_FOUND, "is not served here"),
        ("tiny-jets", np.zeros((1, 7), np.float32), grpc.StatusCode.INVALID_ARGUMENT, "shape [batch, 16]"),
        ("tiny-jets", np.full((1, 16), np.nan, np.float32), grpc.StatusCode.INVALID_ARGUMENT, "NaN or Inf"),
    ],
)
def test_bad_requests_fail_alone(servers, model, x, code, words):
    for target in ("cpu", "fpga"):
        with pytest.raises(grpc.RpcError) as info:
            predict(servers[target]["address"], x, model=model)
        assert info.value.code() == code and words in info.value.details()
        assert predict(servers[target]["address"], np.zeros((2, 16), np.float32)).shape == (2, 5)


def test_metrics_count_requests_by_target_and_code(servers):
    text = urllib.request.urlopen(servers["fpga"]["metrics"], timeout=10).read().decode()
    assert 'fpgaflow_request_duration_seconds_bucket{le="0.001",method="Predict",model="tiny-jets",target="fpga"}' in text
    assert 'fpgaflow_requests_total{code="OK",method="Predict",model="tiny-jets",target="fpga"}' in text
    assert 'code="INVALID_ARGUMENT"' in text or 'code="NOT_FOUND"' in text or "fpgaflow_requests_in_flight" in text
