"""An image model through the whole local flow, and served as images: a small CNN on simulated 16x16 top/QCD
jet images is trained, converted with hls4ml (io_stream), emulated bit-exactly, served on cpu and fpga and
benchmarked with images from the test set; stock TF Serving and Triton clients send [batch, 16, 16, 1]
tensors and get the model's answers, the metadata of both protocols states that shape, and every bad-request
rule holds for images."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as v2
from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.conftest import fpgaflow, serving

pytestmark = pytest.mark.slow

MODEL = "image-cnn"
SHAPE = (16, 16, 1)
MANIFEST = f"""\
apiVersion: fpgaflow.io/v1alpha1
kind: Experiment
metadata: {{name: {MODEL}}}
spec:
  dataset: {{name: jet-images, samples: 2000, imageSize: 16, alignImages: true, seed: 42}}
  model: {{type: cnn, filters: [4, 8], layers: [16], activation: relu}}
  train: {{epochs: 3, batchSize: 64, learningRate: 0.003}}
  hls: {{precision: "ap_fixed<16,6>", ioType: io_stream, reuseFactor: 1}}
  serve: {{targets: [cpu, fpga]}}
  benchmark: {{concurrency: [1, 2], requestsPerClient: 40, batchSizes: [1, 8], warmup: 3}}
"""
MAX_MESSAGE = 1_000_000  # the cpu server's limit: about 900 images of 16x16 float32


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    (base / "cnn.yaml").write_text(MANIFEST)
    done = fpgaflow("run", str(base / "cnn.yaml"), "--home", str(base / "home"), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return base / "home" / "experiments" / MODEL / "t00"


@pytest.fixture(scope="module")
def servers(image_run):
    with serving(image_run, {"cpu": ("--max-message-bytes", str(MAX_MESSAGE)), "fpga": ()}) as addresses:
        yield addresses


@pytest.fixture(scope="module")
def images(image_run) -> np.ndarray:
    x = np.load(image_run / "train" / "testset.npz")["x"][:200].astype(np.float32)
    assert x.shape == (200, *SHAPE)
    return x


@pytest.fixture(scope="module")
def expected(image_run, images) -> dict[str, np.ndarray]:
    from fpgaflow.emulation.library import load_emulator
    from fpgaflow.keras_model import load_model
    from fpgaflow.preprocess import Scaler

    scaled = Scaler.load(image_run / "train" / "scaler.json").apply(images)
    model = load_model(image_run / "train" / "model.keras")
    return {"cpu": np.asarray(model(scaled, training=False)),
            "fpga": load_emulator(image_run / "convert" / "emulator").predict(scaled)}


def same_answers(target: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if target == "fpga":
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def tf_predict(address: str, x: np.ndarray) -> np.ndarray:
    return tf_predict_version(address, MODEL, x, None)


def tf_predict_version(address: str, model: str, x: np.ndarray, version: int | None) -> np.ndarray:
    """The stock TF Serving client's Predict of ``model`` (of one version, or the latest)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(x))
    with grpc.insecure_channel(address) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    return tf.make_ndarray(reply.outputs["probabilities"])


def v2_infer(address: str, x: np.ndarray, shape: list[int] | None = None, datatype: str = "FP32",
             raw: bytes | None = None) -> np.ndarray:
    request = v2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="features", datatype=datatype, shape=list(x.shape) if shape is None else shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes() if raw is None else raw)
    with grpc.insecure_channel(address) as channel:
        reply = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    return np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(reply.outputs[0].shape)


def test_the_cnn_runs_end_to_end_and_the_load_generator_sends_test_images(image_run):
    convert = json.loads((image_run / "convert" / "result.json").read_text())
    fidelity = convert["fidelity"]
    assert fidelity["emulation"]["path"] == "vectorized", fidelity["emulation"]
    assert fidelity["argmax_agreement"] >= 0.95 and fidelity["accuracy_float"] > 0.6
    manifest = json.loads((image_run / "convert" / "emulator" / "emulator.json").read_text())
    assert manifest["input_shape"] == list(SHAPE) and manifest["input_size"] == 256
    bench = json.loads((image_run / "bench" / "results.json").read_text())
    for target in ("cpu", "fpga"):
        assert bench["targets"][target]["status"] == "ready"
        assert bench["targets"][target]["accuracy_served"] > 0.6
    assert bench["targets"]["fpga"]["accuracy_served"] == pytest.approx(fidelity["accuracy_emulated"], abs=1e-9)
    runs = bench["runs"]
    assert {(r["target"], r["batch_size"], r["concurrency"]) for r in runs} == {
        (t, b, c) for t in ("cpu", "fpga") for b in (1, 8) for c in (1, 2)}
    assert all(r["ok"] == r["requests"] and not r["errors"] for r in runs)


@pytest.mark.parametrize("target", ["cpu", "fpga"])
def test_stock_clients_send_image_tensors_and_get_the_models_answers(servers, images, expected, target):
    address = servers[target]["address"]
    same_answers(target, tf_predict(address, images), expected[target])
    same_answers(target, v2_infer(address, images[:37]), expected[target][:37])
    same_answers(target, tf_predict(address, images[5]), expected[target][5:6])  # one image, no batch axis


TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton

address, model, path, out = sys.argv[1:5]
images = np.load(path)
client = triton.InferenceServerClient(address)
features = triton.InferInput("features", list(images.shape), "FP32")
features.set_data_from_numpy(images)
answer = client.infer(model, [features]).as_numpy("probabilities")
np.save(out + ".npy", answer)
json.dump(client.get_model_metadata(model, as_json=True), open(out + ".json", "w"))
client.close()
"""


@pytest.mark.parametrize("target", ["cpu", "fpga"])
def test_tritonclient_sends_images_and_reads_their_shape_from_the_metadata(servers, images, expected, target,
                                                                           tmp_path):
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run([sys.executable, "-c", TRITON_CLIENT, servers[target]["address"], MODEL,
                           str(tmp_path / "images.npy"), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    same_answers(target, np.load(tmp_path / "out.npy"), expected[target])
    metadata = json.loads((tmp_path / "out.json").read_text())
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "16", "16", "1"]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": ["-1", "2"]}]


def test_tf_serving_signature_states_the_image_shape(servers):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    with grpc.insecure_channel(servers["fpga"]["address"]) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert [d.size for d in signature.inputs["features"].tensor_shape.dim] == [-1, 16, 16, 1]
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 2]


def with_nan(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[1, 3, 4, 0] = np.nan
    return x


BAD_IMAGES = {  # name: (send(address, images), gRPC code, words the message must hold)
    "flat-tf": (lambda a, x: tf_predict(a, x[:4].reshape(4, 256)), "INVALID_ARGUMENT",
                ("must have shape [batch, 16, 16, 1], got [4, 256]",)),
    "no-channel-v2": (lambda a, x: v2_infer(a, x[:4, :, :, 0]), "INVALID_ARGUMENT",
                      ("must have shape [batch, 16, 16, 1], got [4, 16, 16]",)),
    "transposed-tf": (lambda a, x: tf_predict(a, x[:4].transpose(0, 3, 1, 2)), "INVALID_ARGUMENT",
                      ("got [4, 1, 16, 16]",)),
    "nan-pixel-tf": (lambda a, x: tf_predict(a, with_nan(x[:4])), "INVALID_ARGUMENT",
                     ("NaN or Inf", "sample 1, position (3, 4, 0)")),
    "nan-pixel-v2": (lambda a, x: v2_infer(a, with_nan(x[:4])), "INVALID_ARGUMENT",
                     ("NaN or Inf", "sample 1, position (3, 4, 0)")),
    "int32-tf": (lambda a, x: tf_predict(a, x[:4].astype(np.int32)), "INVALID_ARGUMENT", ("dtype DT_INT32",)),
    "short-raw-v2": (lambda a, x: v2_infer(a, x[:4], raw=x[:3].astype("<f4").tobytes()), "INVALID_ARGUMENT",
                     ("3072 raw bytes", "shape [4, 16, 16, 1] of FP32 needs 4096")),
    "empty-v2": (lambda a, x: v2_infer(a, x[:0]), "INVALID_ARGUMENT", ("is empty", "[0, 16, 16, 1]")),
    "too-large-tf": (lambda a, x: tf_predict(a, np.resize(x, (1000, *SHAPE))), "RESOURCE_EXHAUSTED",
                     ("larger than max", str(MAX_MESSAGE))),
    "too-large-v2": (lambda a, x: v2_infer(a, np.resize(x, (1000, *SHAPE))), "RESOURCE_EXHAUSTED",
                     ("larger than max", str(MAX_MESSAGE))),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_a_bad_image_request_is_refused_by_name_and_the_server_keeps_answering(servers, images, expected, name):
    send, code, words = BAD_IMAGES[name]
    address = servers["cpu"]["address"]
    with pytest.raises(grpc.RpcError) as info:
        send(address, images)
    assert info.value.code().name == code, info.value.details()
    for word in words:
        assert word in info.value.details()
    same_answers("cpu", tf_predict(address, images[:8]), expected["cpu"][:8])


def test_bench_on_its_own_reads_the_image_shape_from_the_endpoint(servers, tmp_path):
    out = tmp_path / "bench"
    done = fpgaflow("bench", "--address", servers["fpga"]["address"], "--model", MODEL, "--protocol", "tfserving",
                    "--concurrency", "2", "--batch-size", "4", "--requests", "20", "--warmup", "2", "--out", str(out))
    assert "input 'features' (samples of shape [16, 16, 1])" in done.stdout  # from the signature's metadata
    [run] = json.loads((out / "results.json").read_text())["runs"]
    assert run["requests"] == run["ok"] == 40 and not run["errors"]
