"""The one place where fpgaflow's errors become gRPC status codes, and where every call is measured."""

from __future__ import annotations

import time

import grpc

from fpgaflow.errors import FpgaflowError, ModelNotFound, RequestError, TargetUnavailable
from fpgaflow.inference.metrics import ServerMetrics

CODES: dict[type[FpgaflowError], grpc.StatusCode] = {
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    TargetUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_for(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


class ErrorsAndMetrics(grpc.ServerInterceptor):
    """Maps exceptions to status codes and records latency, code and in-flight count per method."""

    def __init__(self, metrics: ServerMetrics):
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not handler_call_details.method.startswith("/tensorflow.serving."):
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        behavior = handler.unary_unary
        metrics = self._metrics

        def wrapped(request, context):
            started = time.perf_counter()
            in_flight = metrics.in_flight.labels(metrics.model, metrics.target)
            in_flight.inc()
            code = grpc.StatusCode.OK
            try:
                return behavior(request, context)
            except FpgaflowError as exc:
                code = status_for(exc)
                context.abort(code, str(exc))
            except Exception as exc:  # a bug: the caller gets INTERNAL with the reason, the server stays up
                code = grpc.StatusCode.INTERNAL
                context.abort(code, f"{type(exc).__name__}: {exc}")
            finally:
                in_flight.dec()
                metrics.observe_request(method, code.name, time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
