"""Triton's extensions of the Open Inference Protocol (ModelConfig, RepositoryIndex, ModelStatistics): the
proto is wire-compatible with Triton's own (every message, field, enum and rpc of ours has Triton's name,
number and type, checked against tritonclient's generated descriptors), and the pure functions behind
the servicer state the model, its batching, the server's state and the counts the model keeps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from fpgaflow.errors import ModelNotFound, RequestError
from fpgaflow.preprocess import Scaler
from fpgaflow_inference.batching import BatchPolicy
from fpgaflow_inference.dataplane import DataPlane, State
from fpgaflow_inference.model import MAX_BATCH, ServedModel
from fpgaflow_inference.openinference import model_config, model_statistics, repository_index
from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as pb

# ------------------------------------------------------------------------------ wire compatibility
# tritonclient's protos define the package `inference` as ours do, and one process's descriptor pool
# refuses a second definition: each side's descriptors are read in a process of their own, by this script
# (argv: the modules of the protocol's files, then the module whose file has the service).
DESCRIPTORS = """
import importlib, json, sys

messages, enums = {}, {}
def walk(message):
    messages[message.full_name] = {f.name: [f.number, f.type, f.is_repeated,
                                            (f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else ""]
                                   for f in message.fields}
    for enum in message.enum_types:
        enums[enum.full_name] = {v.name: v.number for v in enum.values}
    for nested in message.nested_types:
        walk(nested)
files = [importlib.import_module(name).DESCRIPTOR for name in sys.argv[1:]]
for file in files:
    for message in file.message_types_by_name.values():
        walk(message)
    for enum in file.enum_types_by_name.values():
        enums[enum.full_name] = {v.name: v.number for v in enum.values}
service = files[-1].services_by_name["GRPCInferenceService"]
methods = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
print(json.dumps({"messages": messages, "enums": enums, "methods": methods, "service": service.full_name}))
"""


def descriptors(*modules: str) -> dict:
    done = subprocess.run([sys.executable, "-c", DESCRIPTORS, *modules], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def triton() -> dict:
    return descriptors("tritonclient.grpc.model_config_pb2", "tritonclient.grpc.service_pb2")


@pytest.fixture(scope="module")
def ours() -> dict:
    return descriptors("fpgaflow_inference.v2.grpc_predict_v2_pb2")


def test_every_message_and_field_has_tritons_name_number_and_type(triton, ours):
    messages = ours["messages"]
    for name in ("inference.ModelConfig", "inference.ModelStatistics", "inference.RepositoryIndexResponse.ModelIndex"):
        assert name in messages
    for name, fields in messages.items():
        assert name in triton["messages"], f"{name} is not a message of Triton's protocol"
        theirs = triton["messages"][name]
        for field, (number, kind, repeated, type_name) in fields.items():
            assert field in theirs, f"{name}.{field} is not a field of Triton's {name}"
            assert [number, kind, repeated, type_name] == theirs[field], f"{name}.{field} differs from Triton's"


def test_every_enum_value_has_tritons_number(triton, ours):
    enums = ours["enums"]
    assert {"inference.DataType", "inference.ModelInstanceGroup.Kind"} <= set(enums)
    for name, values in enums.items():
        assert values == triton["enums"][name], f"{name} differs from Triton's"  # declared in full


def test_every_rpc_is_tritons_with_its_request_and_response(triton, ours):
    assert ours["service"] == triton["service"]
    methods = ours["methods"]
    assert {"ModelConfig", "RepositoryIndex", "ModelStatistics", "ModelInfer", "ModelMetadata"} <= set(methods)
    for name, types in methods.items():
        assert triton["methods"].get(name) == types, name


# ----------------------------------------------------------------------------------- the model
class FakeBackend:
    """Answers at once with two columns: the sum of the scaled features and its negative."""

    description = "fake"

    def __init__(self, target: str = "cpu"):
        self.target = target

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([x.sum(axis=1), -x.sum(axis=1)], axis=1).astype(np.float32)

    def device_seconds(self, n: int) -> float | None:
        return None


def served(target: str = "cpu", policy: BatchPolicy | None = None, version: int = 1) -> ServedModel:
    scaler = Scaler(("a", "b", "c"), np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    return ServedModel("jets", version, scaler, ("yes", "no"), FakeBackend(target), policy=policy or BatchPolicy())


def test_model_config_states_the_tensors_without_the_batch_dimension_and_no_batching_when_off():
    config = model_config(served("fpga", BatchPolicy(1, 0.0, 4)))
    assert (config.name, config.platform, config.backend, config.max_batch_size) == ("jets", "hls4ml_emulation", "fpga",
                                                                                    MAX_BATCH)
    [features], [probabilities] = config.input, config.output
    assert (features.name, features.data_type, list(features.dims)) == ("features", pb.TYPE_FP32, [3])
    assert (probabilities.name, probabilities.data_type, list(probabilities.dims)) == ("probabilities", pb.TYPE_FP32, [2])
    assert not config.HasField("dynamic_batching")
    [group] = config.instance_group
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_CPU, 4)  # the emulation runs on the host


def test_model_config_states_the_dynamic_batching_policy():
    config = model_config(served("gpu", BatchPolicy(max_batch_size=64, max_delay_s=500e-6, concurrent_batches=1)))
    assert config.platform == "tensorflow" and config.max_batch_size == MAX_BATCH  # larger requests run alone
    assert list(config.dynamic_batching.preferred_batch_size) == [64]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    [group] = config.instance_group
    assert (group.kind, group.count) == (pb.ModelInstanceGroup.KIND_GPU, 1)


@pytest.mark.parametrize("state, expected", [(State.SERVING, ("READY", "")), (State.STARTING, ("LOADING", "starting")),
                                             (State.DRAINING, ("UNLOADING", "shutting down"))])
def test_repository_index_lists_each_version_in_the_servers_state(state, expected):
    reply = repository_index([served(version=2), served(version=1)], state)
    assert [(m.name, m.version, m.state) for m in reply.models] == [("jets", "1", expected[0]), ("jets", "2", expected[0])]
    assert all(expected[1] in m.reason for m in reply.models)
    ready_only = repository_index([served()], state, ready_only=True)
    assert len(ready_only.models) == (1 if state is State.SERVING else 0)


def test_repository_index_of_a_named_repository_is_not_found():
    with pytest.raises(ModelNotFound, match="repository 'models' does not exist"):
        repository_index([served()], State.SERVING, repository="models")


# ------------------------------------------------------------------------------------- statistics
def test_statistics_count_answered_and_failed_requests_and_back_end_calls():
    model = served(policy=BatchPolicy(max_batch_size=1))

    async def main():
        model.start()
        try:
            await model.predict(np.ones((5, 3), np.float32))
            await model.predict(np.ones((3, 3), np.float32))
            with pytest.raises(RequestError):
                await model.predict(np.full((2, 3), np.nan, np.float32))
        finally:
            await model.stop()

    asyncio.run(main())
    [stats] = model_statistics([model]).model_stats
    assert (stats.name, stats.version, stats.inference_count, stats.execution_count) == ("jets", "1", 8, 2)
    infer = stats.inference_stats
    assert (infer.success.count, infer.fail.count) == (2, 1)
    for phase in (infer.queue, infer.compute_input, infer.compute_infer, infer.compute_output):
        assert phase.count == 2
    assert infer.success.ns >= infer.compute_infer.ns > 0 and infer.fail.ns > 0
    assert stats.last_inference > 1_600_000_000_000  # milliseconds since the epoch


def test_statistics_of_a_model_never_called_are_zero():
    [stats] = model_statistics([served()]).model_stats
    assert (stats.inference_count, stats.execution_count, stats.last_inference) == (0, 0, 0)
    assert stats.inference_stats.success.count == stats.inference_stats.success.ns == 0


def test_statistics_select_every_version_or_the_one_named():
    plane = DataPlane([served(version=1), served(version=2)])
    assert [m.version for m in plane.select_v2("", "")] == [1, 2]
    assert [m.version for m in plane.select_v2("jets", "")] == [1, 2]
    assert [m.version for m in plane.select_v2("jets", "2")] == [2]
    with pytest.raises(ModelNotFound, match="'other' is not served here"):
        plane.select_v2("other", "")
    with pytest.raises(ModelNotFound, match="has no version 7"):
        plane.select_v2("jets", "7")
