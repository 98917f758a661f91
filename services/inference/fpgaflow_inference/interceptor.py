"""The one place where fpgaflow's errors become gRPC status codes, and where every call is measured."""

from __future__ import annotations

import asyncio
import time

import grpc
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from fpgaflow.errors import (
    FpgaflowError,
    ModelNotFound,
    RequestError,
    ShuttingDown,
    TargetUnavailable,
    Unsupported,
)
from fpgaflow_inference.metrics import ServerMetrics
from fpgaflow_inference.v2 import grpc_predict_v2_pb2

CODES: dict[type[FpgaflowError], grpc.StatusCode] = {
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    TargetUnavailable: grpc.StatusCode.UNAVAILABLE,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
}
INFERENCE_SERVICES = (  # the inference APIs' services: what is measured here (not health or reflection), and the
    # native front's calls (front.py)
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
)
MEASURED_SERVICES = tuple(f"/{service.full_name}/" for service in INFERENCE_SERVICES)


def status_for(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


class ErrorsAndMetrics(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes and records latency, code and in-flight count per method."""

    def __init__(self, metrics: ServerMetrics):
        self._metrics = metrics
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # method path: its handler, wrapped once

    async def intercept_service(self, continuation, handler_call_details):
        path = handler_call_details.method
        handler = self._handlers.get(path)
        if handler is None:
            handler = self._wrap(path, await continuation(handler_call_details))
            if handler is not None:  # (an unknown method is not kept: its name is the caller's to choose)
                self._handlers[path] = handler
        return handler

    def _wrap(self, path: str, handler):
        if handler is None or handler.unary_unary is None or not path.startswith(MEASURED_SERVICES):
            return handler
        method = path.rsplit("/", 1)[-1]
        behavior = handler.unary_unary
        metrics = self._metrics
        in_flight = metrics.in_flight.labels(metrics.model, metrics.target)

        async def wrapped(request, context):
            started = time.perf_counter()
            in_flight.inc()
            code, message = grpc.StatusCode.OK, ""
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:  # the client went away or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except FpgaflowError as exc:
                code, message = status_for(exc), str(exc)
            except Exception as exc:  # a bug: the caller gets INTERNAL with the reason, the server stays up
                code, message = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
            finally:
                in_flight.dec()
                metrics.observe_request(method, code.name, time.perf_counter() - started)
            await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
