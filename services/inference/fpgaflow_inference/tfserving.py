"""TensorFlow Serving's PredictionService and ModelService: thin translation between the stock protos
and the data plane, so any TF Serving client works unchanged."""

from __future__ import annotations

from google.protobuf import struct_pb2
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fpgaflow.errors import RequestError, Unsupported
from fpgaflow_inference.dataplane import DataPlane, State
from fpgaflow_inference.model import ServedModel
from fpgaflow_inference.tensors import from_array, to_array

SIGNATURE = "serving_default"
METADATA_FIELDS = ("signature_def", "fpgaflow")  # the second: how this server serves (target, batching, pacing)


def signature_def(model: ServedModel) -> meta_graph_pb2.SignatureDef:
    def info(name: str, sample: tuple[int, ...]) -> meta_graph_pb2.TensorInfo:
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in (-1, *sample)]
        shape = tensor_shape_pb2.TensorShapeProto(dim=dims)
        return meta_graph_pb2.TensorInfo(name=name, dtype=types_pb2.DT_FLOAT, tensor_shape=shape)

    return meta_graph_pb2.SignatureDef(
        inputs={model.input_name: info(model.input_name, model.input_shape)},
        outputs={model.output_name: info(model.output_name, (model.n_classes,))},
        method_name="tensorflow/serving/predict",
    )


def resolve(plane: DataPlane, spec) -> ServedModel:
    """The model a ModelSpec names, with TF Serving's version and signature rules."""
    version = spec.version.value if spec.HasField("version") else None
    model = plane.resolve(spec.name, version, spec.version_label)
    if spec.signature_name not in ("", SIGNATURE):
        raise RequestError(f"signature {spec.signature_name!r} does not exist; use {SIGNATURE!r}")
    return model


def _fill_spec(spec, model: ServedModel) -> None:
    spec.name = model.name
    spec.version.value = model.version
    spec.signature_name = SIGNATURE


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        model = resolve(self.plane, request.model_spec)
        name = model.input_name
        unknown = [key for key in request.inputs if key != name]
        if unknown or name not in request.inputs:
            got = ", ".join(map(repr, request.inputs)) or "none"
            raise RequestError(f"the signature takes one input, {name!r}; got {got}")
        wanted = [key for key in request.output_filter if key != model.output_name]
        if wanted:
            raise RequestError(f"output {wanted[0]!r} does not exist; the signature's output is {model.output_name!r}")
        y = await self.plane.predict(model, to_array(request.inputs[name], name))
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, model)
        response.outputs[model.output_name].CopyFrom(from_array(y))
        return response

    async def GetModelMetadata(self, request, context):
        model = resolve(self.plane, request.model_spec)
        fields = list(request.metadata_field) or ["signature_def"]
        unknown = [f for f in fields if f not in METADATA_FIELDS]
        if unknown:
            raise RequestError(f"metadata_field {unknown[0]!r} is not available; available: {', '.join(METADATA_FIELDS)}")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, model)
        if "signature_def" in fields:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            sig_map.signature_def[SIGNATURE].CopyFrom(signature_def(model))
            response.metadata["signature_def"].Pack(sig_map)
        if "fpgaflow" in fields:
            facts = struct_pb2.Struct()
            facts.update(model.facts())
            response.metadata["fpgaflow"].Pack(facts)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def GetModelStatus(self, request, context):
        model = resolve(self.plane, request.model_spec)
        states = get_model_status_pb2.ModelVersionStatus.State
        state = {State.STARTING: states.LOADING, State.SERVING: states.AVAILABLE, State.DRAINING: states.UNLOADING}[self.plane.state]
        response = get_model_status_pb2.GetModelStatusResponse()
        # TF Serving lists every loaded version unless the request names one
        for version in ([model.version] if request.model_spec.HasField("version") else sorted(self.plane.models)):
            status = response.model_version_status.add()
            status.version, status.state = version, state
        return response

    async def HandleReloadConfigRequest(self, request, context):
        raise Unsupported("this server serves one model fixed at start; there is no configuration to reload")
