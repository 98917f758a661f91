"""The serving API as its users see it: stock TF Serving and Triton clients get the model's own answers
from the cpu and fpga servers, the metadata states the contract, bad requests get the right gRPC code and
a message naming the problem (and the server keeps answering), and TLS works. Every test runs twice: with
Python's gRPC server on the port, and with the native front (`serve --front native`) there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fpgaflow import __version__
from fpgaflow.processes import free_port
from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as v2
from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.conftest import ROOT, serving

pytestmark = pytest.mark.slow

MODEL = "tiny-jets"
N_ROWS = 300
TARGETS = ("cpu", "fpga")
SERVICES = {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
STATUS_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
FRONTS = ("python", "native")


@pytest.fixture(scope="module", params=FRONTS)
def front(request) -> str:
    """Who holds the servers' port."""
    return request.param


@pytest.fixture(scope="module")
def servers(servers, tiny_run, front):
    """The cpu and fpga servers of the tiny run behind ``front`` (the session's, for Python's gRPC server)."""
    if front == "python":
        yield servers
        return
    with serving(tiny_run["trial"], {target: ("--front", front) for target in TARGETS}) as addresses:
        yield addresses


# ------------------------------------------------------------------------------------ references
@pytest.fixture(scope="module")
def rows(tiny_run) -> np.ndarray:
    """Raw test-set rows: what a user sends."""
    x = np.load(tiny_run["trial"] / "train" / "testset.npz")["x"][:N_ROWS]
    assert x.shape == (N_ROWS, 16)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def expected(tiny_run, rows) -> dict[str, np.ndarray]:
    """The model's answers computed in this process: Keras for cpu, hls4ml's compiled emulation for fpga."""
    from fpgaflow.emulation.library import load_emulator
    from fpgaflow.keras_model import load_model
    from fpgaflow.preprocess import Scaler

    trial = tiny_run["trial"]
    scaled = Scaler.load(trial / "train" / "scaler.json").apply(rows)
    model = load_model(trial / "train" / "model.keras")
    return {"cpu": np.asarray(model(scaled, training=False)),
            "fpga": load_emulator(trial / "convert" / "emulator").predict(scaled)}


def assert_same_answers(target: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    if target == "fpga":  # the same C simulation on the same float32 inputs: the same bits
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- protocol helpers
def tf_request(x: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(x))
    return request


def tf_send(channel: grpc.Channel, request) -> np.ndarray:
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    assert reply.model_spec.name == MODEL and reply.model_spec.version.value == 1
    return tf.make_ndarray(reply.outputs["probabilities"])


def v2_request(x: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=MODEL, id="r1")
    request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
    return request


def v2_send(channel: grpc.Channel, request) -> np.ndarray:
    reply = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert (reply.model_name, reply.model_version, reply.id) == (MODEL, "1", request.id)
    [output] = reply.outputs
    assert (output.name, output.datatype) == ("probabilities", "FP32")
    return np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(output.shape)


PROTOCOLS = {"tf": (tf_request, tf_send), "v2": (v2_request, v2_send)}


def good_request_is_answered(channel: grpc.Channel, protocol: str, rows: np.ndarray, want: np.ndarray) -> None:
    build, send = PROTOCOLS[protocol]
    assert_same_answers("cpu", send(channel, build(rows[:8])), want[:8])


# ----------------------------------------------------------------------------- stock clients agree
@pytest.mark.parametrize("target", TARGETS)
def test_tf_serving_client_gets_the_models_answers(servers, rows, expected, target):
    with grpc.insecure_channel(servers[target]["address"]) as channel:
        assert_same_answers(target, tf_send(channel, tf_request(rows)), expected[target])


# tritonclient runs in a process of its own: its generated protos and fpgaflow's (which this module
# imports to build malformed requests) both define the package `inference`, and one process's protobuf
# descriptor pool refuses the second definition.
TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

address, model, rows_path, out = sys.argv[1:5]
rows = np.load(rows_path)
client = triton.InferenceServerClient(address)
answers = {}
for first, last in ((0, len(rows)), (0, 1), (100, 117)):  # the whole set, one sample, an odd batch
    features = triton.InferInput("features", [last - first, rows.shape[1]], "FP32")
    features.set_data_from_numpy(rows[first:last])
    result = client.infer(model, [features], outputs=[triton.InferRequestedOutput("probabilities")])
    answers[f"{first}-{last}"] = result.as_numpy("probabilities")
facts = {"live": client.is_server_live(), "ready": client.is_server_ready(),
         "model_ready": client.is_model_ready(model), "version_1_ready": client.is_model_ready(model, "1"),
         "server": client.get_server_metadata(as_json=True), "model": client.get_model_metadata(model, as_json=True)}
try:
    client.is_model_ready(model, "7")
except InferenceServerException as exc:
    facts["version_7"] = [exc.status(), exc.message()]
client.close()
np.savez(out + ".npz", **answers)
with open(out + ".json", "w") as fh:
    json.dump(facts, fh)
"""


@pytest.fixture(scope="module")
def triton_replies(servers, rows, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """What tritonclient got from each target: {target: ({"first-last": probabilities}, facts)}."""
    folder = tmp_path_factory.mktemp("tritonclient")
    np.save(folder / "rows.npy", rows)
    clients = {target: subprocess.Popen(
        [sys.executable, "-c", TRITON_CLIENT, servers[target]["address"], MODEL, str(folder / "rows.npy"),
         str(folder / target)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for target in TARGETS}
    replies = {}
    for target, proc in clients.items():
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, f"tritonclient against {target} failed:\n{output}"
        answers = dict(np.load(folder / f"{target}.npz"))
        replies[target] = answers, json.loads((folder / f"{target}.json").read_text())
    return replies


@pytest.mark.parametrize("target", TARGETS)
def test_tritonclient_gets_the_models_answers_at_any_batch_size(triton_replies, expected, target):
    answers, _ = triton_replies[target]
    assert sorted(answers) == ["0-1", "0-300", "100-117"]
    for key, got in answers.items():
        first, last = map(int, key.split("-"))
        assert_same_answers(target, got, expected[target][first:last])


def test_v2_typed_contents_give_the_same_answers_as_raw_bytes(servers, rows, expected):
    request = v2.ModelInferRequest(model_name=MODEL, model_version="1")
    request.inputs.add(name="features", datatype="FP32", shape=[20, 16]).contents.fp32_contents.extend(rows[:20].ravel())
    with grpc.insecure_channel(servers["cpu"]["address"]) as channel:
        assert_same_answers("cpu", v2_send(channel, request), expected["cpu"][:20])


# --------------------------------------------------------------------------------------- metadata
@pytest.fixture(scope="module")
def contract(tiny_run) -> dict:
    from fpgaflow.trial import read_json

    train = tiny_run["trial"] / "train"
    return {"n_features": len(read_json(train / "scaler.json")["features"]),
            "n_classes": len(read_json(train / "dataset.json")["classes"])}


def dims(tensor_info) -> list[int]:
    return [d.size for d in tensor_info.tensor_shape.dim]


@pytest.mark.parametrize("target", TARGETS)
def test_tf_serving_metadata_states_the_signature_and_how_it_serves(servers, contract, target):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def", "fpgaflow"])
    request.model_spec.name = MODEL
    with grpc.insecure_channel(servers[target]["address"]) as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    assert (reply.model_spec.name, reply.model_spec.version.value) == (MODEL, 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert list(signature.inputs) == ["features"] and list(signature.outputs) == ["probabilities"]
    assert signature.inputs["features"].dtype == signature.outputs["probabilities"].dtype == types_pb2.DT_FLOAT
    assert dims(signature.inputs["features"]) == [-1, contract["n_features"]]
    assert dims(signature.outputs["probabilities"]) == [-1, contract["n_classes"]]

    facts = struct_pb2.Struct()
    assert reply.metadata["fpgaflow"].Unpack(facts)
    facts = json_format.MessageToDict(facts)
    assert facts["target"] == target
    assert facts["batching"] == "off" and facts["pacing"] == "off"  # the tiny spec sets neither
    assert ("LiteRT" if target == "cpu" else "hls4ml") in facts["backend"]  # cpu: LiteRT covers the tiny MLP
    assert ("device_timing" in facts) == (target == "fpga")
    if target == "fpga":  # which emulation serves: the vectorized one, which covers the tiny network
        assert facts["emulation"].startswith("vectorized emulation (") and "checked at load" in facts["emulation"]


@pytest.mark.parametrize("target", TARGETS)
def test_model_status_is_version_1_available(servers, target):
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL))
    with grpc.insecure_channel(servers[target]["address"]) as channel:
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    [status] = reply.model_version_status
    assert (status.version, status.state) == (1, STATUS_AVAILABLE)


@pytest.mark.parametrize("target, platform", [("cpu", "tensorflow"), ("fpga", "hls4ml_emulation")])
def test_v2_liveness_readiness_and_metadata_via_tritonclient(triton_replies, contract, target, platform):
    facts = triton_replies[target][1]
    assert facts["live"] and facts["ready"] and facts["model_ready"] and facts["version_1_ready"]
    status, message = facts["version_7"]  # tritonclient raises on the NOT_FOUND of a version not loaded
    assert status == "StatusCode.NOT_FOUND" and "no version 7" in message
    assert facts["server"]["name"] == "fpgaflow" and facts["server"]["version"] == __version__
    model = facts["model"]
    assert (model["name"], model["versions"], model["platform"]) == (MODEL, ["1"], platform)
    [features], [probabilities] = model["inputs"], model["outputs"]
    assert features == {"name": "features", "datatype": "FP32", "shape": ["-1", str(contract["n_features"])]}
    assert probabilities == {"name": "probabilities", "datatype": "FP32", "shape": ["-1", str(contract["n_classes"])]}


def test_health_reports_serving_for_the_server_and_each_api(servers):
    with grpc.insecure_channel(servers["cpu"]["address"]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_service(servers):
    with grpc.insecure_channel(servers["fpga"]["address"]) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == SERVICES
        predict = database.FindFileContainingSymbol("tensorflow.serving.PredictionService")
        assert "tensorflow.serving.PredictionService" in [f"{predict.package}.{s.name}" for s in predict.service]


# ------------------------------------------------------------------------------------ bad requests
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@dataclass(frozen=True)
class Bad:
    protocol: str  # "tf": TF Serving Predict; "v2": Open Inference ModelInfer
    name: str
    spoil: Callable  # (a good request for 4 rows, those rows) -> None: makes the request bad in place
    code: grpc.StatusCode
    words: tuple[str, ...]  # what the message must say

    @property
    def id(self) -> str:
        return f"{self.protocol}-{self.name}"


def with_value(x: np.ndarray, value: float) -> np.ndarray:
    x = x.copy()
    x[1, 2] = value
    return x


def tf_features(request, tensor) -> None:
    request.inputs["features"].CopyFrom(tensor)


def tf_rename_input(request, _x) -> None:
    request.inputs["x"].CopyFrom(request.inputs["features"])
    del request.inputs["features"]


def tf_shape_mismatch(request, x) -> None:  # a [2, 16] tensor that carries one sample
    tensor = tf.make_tensor_proto(x[:1])
    tensor.tensor_shape.dim[0].size = 2
    tf_features(request, tensor)


def v2_features(request, x: np.ndarray, datatype: str = "FP32", raw: bytes | None = None) -> None:
    request.inputs[0].datatype, request.inputs[0].shape[:] = datatype, list(x.shape)
    request.raw_input_contents[0] = np.ascontiguousarray(x, "<f4").tobytes() if raw is None else raw


def v2_extra_input(request, x) -> None:
    request.inputs.add(name="mask", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())


BAD_REQUESTS = [
    Bad("tf", "unknown-model", lambda r, x: setattr(r.model_spec, "name", "no-such-model"), NOT_FOUND,
        ("'no-such-model' is not served here", f"serves '{MODEL}'")),
    Bad("v2", "unknown-model", lambda r, x: setattr(r, "model_name", "no-such-model"), NOT_FOUND,
        ("'no-such-model' is not served here", f"serves '{MODEL}'")),
    Bad("tf", "unknown-version", lambda r, x: setattr(r.model_spec.version, "value", 7), NOT_FOUND,
        ("has no version 7", "loaded versions: 1")),
    Bad("v2", "unknown-version", lambda r, x: setattr(r, "model_version", "7"), NOT_FOUND,
        ("has no version 7", "loaded versions: 1")),
    Bad("tf", "version-label", lambda r, x: setattr(r.model_spec, "version_label", "stable"), INVALID,
        ("version label 'stable' is not assigned",)),
    Bad("tf", "unknown-signature", lambda r, x: setattr(r.model_spec, "signature_name", "classify"), INVALID,
        ("signature 'classify' does not exist", "'serving_default'")),
    Bad("tf", "wrong-input-name", tf_rename_input, INVALID, ("one input, 'features'", "got 'x'")),
    Bad("v2", "wrong-input-name", lambda r, x: setattr(r.inputs[0], "name", "x"), INVALID,
        ("one input, 'features'", "got 'x'")),
    Bad("tf", "extra-input", lambda r, x: r.inputs["mask"].CopyFrom(tf.make_tensor_proto(x)), INVALID,
        ("one input, 'features'", "'mask'")),
    Bad("v2", "extra-input", v2_extra_input, INVALID, ("one input, 'features'", "got 'features', 'mask'")),
    Bad("tf", "three-features", lambda r, x: tf_features(r, tf.make_tensor_proto(x[:, :3])), INVALID,
        ("'features' must have shape [batch, 16], got [4, 3]",)),
    Bad("v2", "three-features", lambda r, x: v2_features(r, x[:, :3]), INVALID,
        ("'features' must have shape [batch, 16], got [4, 3]",)),
    Bad("tf", "int32", lambda r, x: tf_features(r, tf.make_tensor_proto(x.astype(np.int32))), INVALID,
        ("dtype DT_INT32", "DT_FLOAT")),
    Bad("v2", "int32", lambda r, x: v2_features(r, x, "INT32", x.astype("<i4").tobytes()), INVALID,
        ("datatype INT32", "FP32")),
    Bad("tf", "empty", lambda r, x: tf_features(r, tf.make_tensor_proto(x[:0])), INVALID,
        ("'features' is empty", "[0, 16]")),
    Bad("v2", "empty", lambda r, x: v2_features(r, x[:0]), INVALID, ("'features' is empty", "[0, 16]")),
    Bad("tf", "nan", lambda r, x: tf_features(r, tf.make_tensor_proto(with_value(x, np.nan))), INVALID,
        ("NaN or Inf", "sample 1, feature 2")),
    Bad("v2", "nan", lambda r, x: v2_features(r, with_value(x, np.nan)), INVALID, ("NaN or Inf", "sample 1, feature 2")),
    Bad("tf", "inf", lambda r, x: tf_features(r, tf.make_tensor_proto(with_value(x, -np.inf))), INVALID,
        ("NaN or Inf", "sample 1, feature 2")),
    Bad("v2", "inf", lambda r, x: v2_features(r, with_value(x, np.inf)), INVALID, ("NaN or Inf", "sample 1, feature 2")),
    Bad("tf", "values-fewer-than-shape", tf_shape_mismatch, INVALID, ("holds 16 values", "shape [2, 16] needs 32")),
    Bad("v2", "raw-bytes-fewer-than-shape", lambda r, x: v2_features(r, x, raw=x[:3].astype("<f4").tobytes()), INVALID,
        ("192 raw bytes", "shape [4, 16] of FP32 needs 256")),
    Bad("tf", "partial-value-bytes", lambda r, x: setattr(r.inputs["features"], "tensor_content", b"\0" * 5), INVALID,
        ("tensor_content of 5 bytes",)),
    Bad("tf", "unknown-output", lambda r, x: r.output_filter.append("logits"), INVALID,
        ("output 'logits' does not exist", "'probabilities'")),
    Bad("v2", "unknown-output", lambda r, x: r.outputs.add(name="logits"), INVALID,
        ("output 'logits' does not exist", "'probabilities'")),
]


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda bad: bad.id)
def test_a_bad_request_is_refused_by_name_and_the_server_keeps_answering(servers, rows, expected, bad):
    build, send = PROTOCOLS[bad.protocol]
    request = build(rows[:4])
    bad.spoil(request, rows[:4])
    with grpc.insecure_channel(servers["cpu"]["address"]) as channel:
        with pytest.raises(grpc.RpcError) as info:
            send(channel, request)
        assert info.value.code() == bad.code, info.value.details()
        for words in bad.words:
            assert words in info.value.details()
        good_request_is_answered(channel, bad.protocol, rows, expected["cpu"])


# -------------------------------------------------------------------------- servers of this module
@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()


def start_server(trial: Path, log: Path, *flags: str) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpgaflow", "serve", "--trial-dir", str(trial), "--target", "cpu", "--port", str(port),
         "--metrics-port", str(free_port()), *flags], cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return Server(proc, port, log)


def wait_serving(server: Server, channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 120
    while True:
        assert server.proc.poll() is None, f"the server exited {server.proc.returncode}:\n{server.output()}"
        assert time.monotonic() < deadline, f"the server did not come up:\n{server.output()}"
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> dict[str, Path]:
    """A self-signed certificate for localhost, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return {"cert": cert, "key": key}


@pytest.fixture(scope="module")
def own_servers(tiny_run, certificate, tmp_path_factory, front):
    """This module's cpu servers of the tiny trial, started together since each takes seconds to load
    TensorFlow: one that takes messages up to 200,000 bytes, one on TLS, one given a certificate without its key."""
    logs, trial = tmp_path_factory.mktemp("servers"), tiny_run["trial"]
    cert, key = str(certificate["cert"]), str(certificate["key"])
    servers = {"small-limit": start_server(trial, logs / "small-limit.log", "--front", front, "--max-message-bytes", "200000"),
               "tls": start_server(trial, logs / "tls.log", "--front", front, "--tls-cert", cert, "--tls-key", key),
               "no-key": start_server(trial, logs / "no-key.log", "--front", front, "--tls-cert", cert)}
    try:
        yield servers
    finally:
        for server in servers.values():
            stop(server.proc)


@pytest.fixture(scope="module")
def small_limit_server(own_servers) -> Server:
    server = own_servers["small-limit"]
    with grpc.insecure_channel(server.address) as channel:
        wait_serving(server, channel)
    return server


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_over_large_request_is_resource_exhausted_and_the_server_keeps_answering(small_limit_server, rows, expected,
                                                                                     protocol):
    build, send = PROTOCOLS[protocol]
    big = np.resize(rows, (10_000, 16))  # 640,000 bytes of float32
    with grpc.insecure_channel(small_limit_server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            send(channel, build(big))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details() and "200000" in info.value.details()
        good_request_is_answered(channel, protocol, rows, expected["cpu"])
        # a request under the limit is served
        assert_same_answers("cpu", send(channel, build(rows[:N_ROWS])), expected["cpu"])


# -------------------------------------------------------------------------------------------- TLS
def tls_channel(port: int, cert: Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    return grpc.secure_channel(f"localhost:{port}", credentials)


@pytest.fixture(scope="module")
def tls_server(own_servers, certificate) -> Server:
    server = own_servers["tls"]
    with tls_channel(server.port, certificate["cert"]) as channel:
        wait_serving(server, channel)
    return server


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_tls_client_gets_the_models_answers(tls_server, certificate, rows, expected, protocol):
    build, send = PROTOCOLS[protocol]
    with tls_channel(tls_server.port, certificate["cert"]) as channel:
        assert_same_answers("cpu", send(channel, build(rows)), expected["cpu"])
    assert f"at grpcs://{tls_server.address}" in tls_server.output()  # the server says it speaks TLS


def test_clients_without_tls_or_without_trust_in_the_certificate_are_refused(tls_server, rows):
    untrusted = grpc.secure_channel(f"localhost:{tls_server.port}", grpc.ssl_channel_credentials())  # system roots
    for channel in (grpc.insecure_channel(tls_server.address), untrusted):
        with channel, pytest.raises(grpc.RpcError) as info:
            tf_send(channel, tf_request(rows[:4]))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_without_its_key_is_refused_at_start(own_servers):
    server = own_servers["no-key"]
    assert server.proc.wait(timeout=120) == 2, server.output()
    output = server.output()
    assert "serve cpu failed (InvalidSettings)" in output and "--tls-key" in output
    assert "serving '" not in output
