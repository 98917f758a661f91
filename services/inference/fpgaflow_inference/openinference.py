"""The Open Inference Protocol v2 (KServe, Triton) GRPCInferenceService: thin translation between the
protocol's messages and the data plane, so tritonclient and KServe clients work unchanged. Triton's
extensions that its tools call (ModelConfig, RepositoryIndex, ModelStatistics) are answered too."""

from __future__ import annotations

from fpgaflow import __version__
from fpgaflow.errors import ModelNotFound, RequestError
from fpgaflow_inference.dataplane import DataPlane, State
from fpgaflow_inference.model import MAX_BATCH, ServedModel
from fpgaflow_inference.stats import Duration
from fpgaflow_inference.tensors import array_to_v2_raw, v2_to_array
from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as pb
from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

SERVER_NAME = "fpgaflow"
PLATFORMS = {"cpu": "tensorflow", "gpu": "tensorflow", "fpga": "hls4ml_emulation"}
# Triton's names for the protocol extensions this server implements in full (ModelConfig; ModelStatistics).
# RepositoryIndex belongs to Triton's "model_repository", whose load and unload this server does not offer.
EXTENSIONS = ("model_configuration", "statistics")
# Triton's model states in the repository index, by the server's state, with the reason when not ready
MODEL_STATES = {State.SERVING: ("READY", ""), State.STARTING: ("LOADING", "the server is still starting"),
                State.DRAINING: ("UNLOADING", "the server is shutting down and takes no new requests")}


def platform(model: ServedModel) -> str:
    name = PLATFORMS.get(model.backend.target, model.backend.target)
    return f"{name}_paced" if model.pacer is not None else name


def model_metadata(model: ServedModel, versions: list[int]) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.name, versions=[str(v) for v in versions], platform=platform(model),
        inputs=[tensor(name=model.input_name, datatype="FP32", shape=[-1, *model.input_shape])],
        outputs=[tensor(name=model.output_name, datatype="FP32", shape=[-1, model.n_classes])],
    )


def model_config(model: ServedModel) -> pb.ModelConfig:
    """Triton's configuration of the model: float32 tensors whose dims leave out the batch dimension, since
    a request may carry up to MAX_BATCH samples; with dynamic batching on, the server combines requests into
    back-end calls of up to the policy's batch size (a larger request runs alone), waiting at most its delay."""
    kind = pb.ModelInstanceGroup.KIND_GPU if model.backend.target == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config = pb.ModelConfig(
        name=model.name, platform=platform(model), backend=model.backend.target, max_batch_size=MAX_BATCH,
        input=[pb.ModelInput(name=model.input_name, data_type=pb.TYPE_FP32, dims=list(model.input_shape))],
        output=[pb.ModelOutput(name=model.output_name, data_type=pb.TYPE_FP32, dims=[model.n_classes])],
        instance_group=[pb.ModelInstanceGroup(name=f"{model.name}_{model.backend.target}", kind=kind,
                                              count=model.policy.concurrent_batches)],
    )
    if model.policy.enabled:
        config.dynamic_batching.CopyFrom(pb.ModelDynamicBatching(
            preferred_batch_size=[model.policy.max_batch_size],
            max_queue_delay_microseconds=round(model.policy.max_delay_s * 1e6)))
    return config


def repository_index(models: list[ServedModel], state: State, ready_only: bool = False,
                     repository: str = "") -> pb.RepositoryIndexResponse:
    """Every version served, in the server's state; ``ready_only``: none unless the server is serving."""
    if repository:
        raise ModelNotFound(f"repository {repository!r} does not exist; this server has one, unnamed: "
                            f"leave repository_name empty")
    state_name, reason = MODEL_STATES[state]
    if ready_only and state_name != "READY":
        return pb.RepositoryIndexResponse()
    index = pb.RepositoryIndexResponse.ModelIndex
    return pb.RepositoryIndexResponse(models=[
        index(name=model.name, version=str(model.version), state=state_name, reason=reason)
        for model in sorted(models, key=lambda m: m.version)])


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(models: list[ServedModel]) -> pb.ModelStatisticsResponse:
    """Each version's counts and time spent since the server started (stats.ModelStats)."""
    response = pb.ModelStatisticsResponse()
    for model in models:
        s = model.stats
        response.model_stats.add(
            name=model.name, version=str(model.version), last_inference=s.last_inference_ms,
            inference_count=s.inference_count, execution_count=s.execution_count,
            inference_stats=pb.InferStatistics(
                success=_duration(s.success), fail=_duration(s.fail), queue=_duration(s.queue),
                compute_input=_duration(s.compute_input), compute_infer=_duration(s.compute_infer),
                compute_output=_duration(s.compute_output)))
    return response


def request_input(model: ServedModel, request: pb.ModelInferRequest):
    """The one input tensor the model takes, with its raw bytes when the request sends them so."""
    names = [t.name for t in request.inputs]
    if names != [model.input_name]:
        raise RequestError(f"the model takes one input, {model.input_name!r}; got {', '.join(map(repr, names)) or 'none'}")
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise RequestError(f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} inputs")
    raw = request.raw_input_contents[0] if request.raw_input_contents else None
    return v2_to_array(request.inputs[0], raw)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(self, request, context):
        self.plane.resolve_v2(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS))

    async def ModelMetadata(self, request, context):
        return model_metadata(self.plane.resolve_v2(request.name, request.version), sorted(self.plane.models))

    async def ModelInfer(self, request, context):
        model = self.plane.resolve_v2(request.model_name, request.model_version)
        wanted = [t.name for t in request.outputs if t.name != model.output_name]
        if wanted:
            raise RequestError(f"output {wanted[0]!r} does not exist; the model's output is {model.output_name!r}")
        y = await self.plane.predict(model, request_input(model, request))
        datatype, shape, raw = array_to_v2_raw(y)
        response = pb.ModelInferResponse(model_name=model.name, model_version=str(model.version), id=request.id)
        response.outputs.add(name=model.output_name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
        return response

    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=model_config(self.plane.resolve_v2(request.name, request.version)))

    async def RepositoryIndex(self, request, context):
        return repository_index(list(self.plane.models.values()), self.plane.state, request.ready, request.repository_name)

    async def ModelStatistics(self, request, context):
        return model_statistics(self.plane.select_v2(request.name, request.version))
