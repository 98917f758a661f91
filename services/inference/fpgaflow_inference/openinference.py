"""The Open Inference Protocol v2 (KServe, Triton) GRPCInferenceService: thin translation between the
protocol's messages and the data plane, so tritonclient and KServe clients work unchanged."""

from __future__ import annotations

from fpgaflow import __version__
from fpgaflow.errors import RequestError
from fpgaflow_inference.dataplane import DataPlane
from fpgaflow_inference.model import ServedModel
from fpgaflow_inference.tensors import array_to_v2_raw, v2_to_array
from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as pb
from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as pb_grpc

SERVER_NAME = "fpgaflow"
PLATFORMS = {"cpu": "tensorflow", "gpu": "tensorflow", "fpga": "hls4ml_emulation"}


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
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[])

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
