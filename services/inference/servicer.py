"""TensorFlow Serving's PredictionService: thin translation between protos and the served model."""

from __future__ import annotations

from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from fpgaflow.errors import ModelNotFound, RequestError
from fpgaflow.inference.model import ServedModel
from fpgaflow.inference.tensors import from_array, to_array

SIGNATURE = "serving_default"


def signature_def(model: ServedModel, n_classes: int) -> meta_graph_pb2.SignatureDef:
    def info(name: str, width: int) -> meta_graph_pb2.TensorInfo:
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1), tensor_shape_pb2.TensorShapeProto.Dim(size=width)]
        )
        return meta_graph_pb2.TensorInfo(name=name, dtype=types_pb2.DT_FLOAT, tensor_shape=shape)

    return meta_graph_pb2.SignatureDef(
        inputs={model.input_name: info(model.input_name, model.n_features)},
        outputs={model.output_name: info(model.output_name, n_classes)},
        method_name="tensorflow/serving/predict",
    )


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model: ServedModel):
        self.model = model

    def _check_spec(self, spec) -> None:
        if spec.name != self.model.name:
            raise ModelNotFound(f"model {spec.name!r} is not served here; this server serves {self.model.name!r}")
        if spec.HasField("version") and spec.version.value != self.model.version:
            raise ModelNotFound(f"model {spec.name!r} has no version {spec.version.value}; served: {self.model.version}")
        if spec.signature_name not in ("", SIGNATURE):
            raise RequestError(f"signature {spec.signature_name!r} does not exist; use {SIGNATURE!r}")

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        self._check_spec(request.model_spec)
        name = self.model.input_name
        if name not in request.inputs:
            got = ", ".join(map(repr, request.inputs)) or "none"
            raise RequestError(f"input {name!r} is required; got {got}")
        y = self.model.predict(to_array(request.inputs[name], name))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.model_spec.signature_name = SIGNATURE
        response.outputs[self.model.output_name].CopyFrom(from_array(y))
        return response

    def GetModelMetadata(self, request, context):
        self._check_spec(request.model_spec)
        if list(request.metadata_field) not in ([], ["signature_def"]):
            raise RequestError(f"metadata_field must be ['signature_def'], got {list(request.metadata_field)}")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        sig_map.signature_def[SIGNATURE].CopyFrom(signature_def(self.model, len(self.model.classes)))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.metadata["signature_def"].Pack(sig_map)
        return response
