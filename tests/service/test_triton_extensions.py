"""Triton's own client asks a real server for what Triton's tools ask for: the model configuration (its
tensors and dynamic batching), the repository index and the inference statistics, which count the
inferences it ran. A cpu server of the tiny trial with dynamic batching on, and the shared fpga server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import serving
from tests.service.test_serving_api import MODEL, assert_same_answers, contract, expected, rows  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

MAX_BATCH_SIZE, MAX_LATENCY_MICROS = 8, 500
BATCHES = ((0, 5), (5, 8))  # two requests, one after the other: two back-end calls, 8 samples

# tritonclient runs in a process of its own: its protos and fpgaflow's both define the package `inference`.
TRITON_CLIENT = """
import json, sys, time
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

batching_address, fpga_address, model, rows_path, batches, out = sys.argv[1:7]
rows = np.load(rows_path)
facts, answers = {}, {}

def refusal(call):
    try:
        call()
    except InferenceServerException as exc:
        return [exc.status(), exc.message()]
    return None

client = triton.InferenceServerClient(batching_address)
facts["config"] = client.get_model_config(model, as_json=True)
facts["config_v1"] = client.get_model_config(model, "1", as_json=True)
facts["index"] = client.get_model_repository_index(as_json=True)
facts["before"] = client.get_inference_statistics(model, as_json=True)
facts["started_ms"] = time.time_ns() // 1_000_000
for first, last in json.loads(batches):
    features = triton.InferInput("features", [last - first, rows.shape[1]], "FP32")
    features.set_data_from_numpy(rows[first:last])
    answers[f"{first}-{last}"] = client.infer(model, [features]).as_numpy("probabilities")
facts["finished_ms"] = time.time_ns() // 1_000_000
facts["after"] = client.get_inference_statistics(model, as_json=True)
facts["all_models"] = client.get_inference_statistics(as_json=True)
facts["unknown_model_config"] = refusal(lambda: client.get_model_config("no-such-model"))
facts["unknown_version_config"] = refusal(lambda: client.get_model_config(model, "7"))
facts["unknown_version_statistics"] = refusal(lambda: client.get_inference_statistics(model, "7"))
facts["server"] = client.get_server_metadata(as_json=True)
client.close()

client = triton.InferenceServerClient(fpga_address)
facts["fpga_config"] = client.get_model_config(model, as_json=True)
client.close()
np.savez(out + ".npz", **answers)
with open(out + ".json", "w") as fh:
    json.dump(facts, fh)
"""


@pytest.fixture(scope="module")
def batching_server(tiny_run):
    """A cpu server of the tiny trial with dynamic batching on (the tiny spec leaves it off)."""
    flags = ("--max-batch-size", str(MAX_BATCH_SIZE), "--max-latency-micros", str(MAX_LATENCY_MICROS))
    with serving(tiny_run["trial"], {"cpu": flags}) as addresses:
        yield addresses["cpu"]


@pytest.fixture(scope="module")
def triton_reply(batching_server, servers, rows, tmp_path_factory) -> tuple[dict, dict]:  # noqa: F811
    """What tritonclient got: ({"first-last": probabilities}, facts)."""
    folder = tmp_path_factory.mktemp("triton-extensions")
    np.save(folder / "rows.npy", rows)
    done = subprocess.run(
        [sys.executable, "-c", TRITON_CLIENT, batching_server["address"], servers["fpga"]["address"], MODEL,
         str(folder / "rows.npy"), json.dumps(BATCHES), str(folder / "reply")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert done.returncode == 0, f"tritonclient failed:\n{done.stdout}"
    return dict(np.load(folder / "reply.npz")), json.loads((folder / "reply.json").read_text())


def test_model_config_states_the_tensors_and_the_dynamic_batching(triton_reply, contract):  # noqa: F811
    facts = triton_reply[1]
    config = facts["config"]["config"]
    assert facts["config_v1"] == facts["config"]
    assert (config["name"], config["platform"], config["backend"]) == (MODEL, "tensorflow", "cpu")
    assert config["max_batch_size"] == 65536  # what one request may carry; batching combines requests up to 8
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [str(contract["n_features"])]}]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [str(contract["n_classes"])]}]
    assert config["dynamic_batching"] == {"preferred_batch_size": [MAX_BATCH_SIZE],
                                          "max_queue_delay_microseconds": str(MAX_LATENCY_MICROS)}
    assert config["instance_group"] == [{"name": f"{MODEL}_cpu", "kind": "KIND_CPU", "count": 1}]


def test_model_config_of_a_server_without_batching_has_none(triton_reply):
    config = triton_reply[1]["fpga_config"]["config"]
    assert (config["platform"], config["backend"]) == ("hls4ml_emulation", "fpga")
    assert "dynamic_batching" not in config
    assert config["instance_group"][0]["count"] == 4  # back-end calls at once without batching


def test_unknown_models_and_versions_are_not_found(triton_reply):
    facts = triton_reply[1]
    status, message = facts["unknown_model_config"]
    assert status == "StatusCode.NOT_FOUND" and "'no-such-model' is not served here" in message
    for key in ("unknown_version_config", "unknown_version_statistics"):
        status, message = facts[key]
        assert status == "StatusCode.NOT_FOUND" and "has no version 7" in message and "loaded versions: 1" in message


def test_repository_index_lists_the_model_ready(triton_reply):
    assert triton_reply[1]["index"] == {"models": [{"name": MODEL, "version": "1", "state": "READY"}]}


def test_server_metadata_names_the_extensions(triton_reply):
    assert {"model_configuration", "statistics"} <= set(triton_reply[1]["server"]["extensions"])


def test_tritonclient_gets_the_models_answers_from_the_batching_server(triton_reply, expected):  # noqa: F811
    answers = triton_reply[0]
    assert sorted(answers) == sorted(f"{first}-{last}" for first, last in BATCHES)
    for first, last in BATCHES:
        assert_same_answers("cpu", answers[f"{first}-{last}"], expected["cpu"][first:last])


def test_statistics_count_the_inferences(triton_reply):
    facts = triton_reply[1]
    [before] = facts["before"]["model_stats"]
    assert (before["name"], before["version"]) == (MODEL, "1")
    assert "inference_count" not in before and "last_inference" not in before  # zero: nothing ran yet
    [after] = facts["after"]["model_stats"]
    assert facts["all_models"]["model_stats"] == facts["after"]["model_stats"]  # one model, one version
    samples = sum(last - first for first, last in BATCHES)
    assert (int(after["inference_count"]), int(after["execution_count"])) == (samples, len(BATCHES))
    assert facts["started_ms"] <= int(after["last_inference"]) <= facts["finished_ms"]
    stats = after["inference_stats"]
    assert int(stats["success"]["count"]) == len(BATCHES) and "count" not in stats.get("fail", {})
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert int(stats[phase]["count"]) == len(BATCHES), phase
    # a request's whole time covers its phases: its wait for a batch and its batch's back-end call
    whole = int(stats["success"]["ns"])
    assert whole >= int(stats["queue"]["ns"]) + int(stats["compute_infer"]["ns"]) and int(stats["compute_infer"]["ns"]) > 0


def test_tritons_perf_analyzer_measures_the_server_unchanged(batching_server):
    """Triton's performance analyzer, the binary tritonclient installs, against the batching server: it reads
    the model's configuration and metadata, sends inputs of its own, and reads the server's statistics."""
    import nvidia.cuda_runtime  # libcudart.so.12, which the binary links

    libs = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "perf_analyzer"), "-m", MODEL, "-i", "grpc", "-u", batching_server["address"],
         "--concurrency-range", "2", "--measurement-mode", "count_windows", "--measurement-request-count", "100",
         "--stability-percentage", "1000"],  # (a stable figure is not what this test is about: a busy machine's will do)
        env={**os.environ, "LD_LIBRARY_PATH": str(libs)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=180)
    assert done.returncode == 0, done.stdout
    server = done.stdout[done.stdout.index("Server:"):]
    counts = {k: int(v) for k, v in re.findall(r"(Inference count|Execution count|Successful request count): (\d+)",
                                                server)}
    assert counts["Successful request count"] > 0 and counts["Inference count"] >= counts["Successful request count"]
    assert 0 < counts["Execution count"] <= counts["Inference count"], "batched: no more back-end calls than samples"
    assert float(re.search(r"throughput: ([\d.]+) infer/sec", done.stdout).group(1)) > 0
