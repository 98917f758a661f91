"""SIGTERM under load: every request the server accepted is answered, the ones that arrive while it
drains are refused with UNAVAILABLE ("shutting down"), and the server exits 0 and says what it did; with
Python's gRPC server on the port and with the native front there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from fpgaflow.processes import free_port
from fpgaflow_inference.loadgen import health_ok
from fpgaflow_inference.server import QUIET_SECONDS
from fpgaflow_inference.tensors import from_array, to_array
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

MODEL, FEATURES, CLASSES = "tiny-jets", 16, 5
CLIENTS = 32
BACKOFF_SECONDS = 2 * QUIET_SECONDS
STOPPED = re.compile(r"cpu server stopped: (\d+) prediction\(s\) accepted, (\d+) answered, (\d+) refused while not serving")
IN_FLIGHT = re.compile(r"cpu server: shutting down, (\d+) request\(s\) in flight")


class Server:
    """``fpgaflow serve`` of the tiny trial's cpu target in its own process, its output in a file."""

    def __init__(self, trial: Path, log: Path, *flags: str):
        self.address = f"127.0.0.1:{free_port()}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fpgaflow", "serve", "--trial-dir", str(trial), "--target", "cpu",
                 "--port", self.address.rsplit(":", 1)[1], "--metrics-port", str(free_port()), *flags],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        deadline = time.monotonic() + 120
        while not health_ok(self.address):
            assert self.proc.poll() is None, f"the server exited {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"the server did not come up:\n{self.output()}"
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text()

    def stopped_line(self) -> tuple[int, int, int]:
        """(accepted, answered, refused) from the server's last line."""
        last = self.output().strip().splitlines()[-1]
        match = STOPPED.fullmatch(last)
        assert match, f"unexpected last line {last!r}"
        return tuple(int(n) for n in match.groups())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def start_server(tiny_run, tmp_path):
    started: list[Server] = []

    def start(*flags: str) -> Server:
        started.append(Server(tiny_run["trial"], tmp_path / f"server{len(started)}.log", *flags))
        return started[-1]

    yield start
    for server in started:
        server.kill()


def predict_request(x: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["features"].CopyFrom(from_array(x))
    return request


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    sent: float  # time.monotonic()
    done: float
    correct: bool = True  # an OK answer with the caller's own rows


def shutting_down(o: Outcome) -> bool:
    return o.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in o.details


def client(address: str, x: np.ndarray, proc: subprocess.Popen, outcomes: list[Outcome], give_up: float) -> None:
    """Predicts in a loop on its own connection until one request has gone out after the server exited;
    backs off after UNAVAILABLE, as a gRPC retry policy does, so that a draining server sees its
    requests stop (it stops once none has arrived for a while)."""
    request = predict_request(x)
    expected = None
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while time.monotonic() < give_up:
            exited = proc.poll() is not None
            sent = time.monotonic()
            try:
                y = to_array(stub.Predict(request, timeout=30).outputs["probabilities"], "probabilities")
            except grpc.RpcError as exc:
                outcomes.append(Outcome(exc.code(), exc.details() or "", sent, time.monotonic()))
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    time.sleep(BACKOFF_SECONDS)
            else:
                expected = y if expected is None else expected
                correct = y.shape == (len(x), CLASSES) and np.allclose(y, expected, atol=1e-5)
                outcomes.append(Outcome(grpc.StatusCode.OK, "", sent, time.monotonic(), correct))
            if exited:
                return


FRONTS = ("python", "native")


@pytest.mark.parametrize("front", FRONTS)
def test_sigterm_under_load_answers_every_accepted_request(start_server, front):
    server = start_server("--front", front, "--max-batch-size", "16", "--max-latency-micros", "2000")
    rng = np.random.default_rng(5)
    outcomes: list[Outcome] = []
    give_up = time.monotonic() + 90
    threads = [threading.Thread(target=client, args=(server.address, rng.normal(size=(1 + i % 4, FEATURES)).astype(np.float32),
                                                     server.proc, outcomes, give_up), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    while sum(o.code == grpc.StatusCode.OK for o in outcomes) < 1000:  # under load: every client has been answered many times
        assert time.monotonic() < give_up and all(t.is_alive() for t in threads), Counter(o.code for o in outcomes)
        time.sleep(0.01)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.output()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    codes = Counter(o.code for o in outcomes)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    ok = [o for o in outcomes if o.code == grpc.StatusCode.OK]
    refused = [o for o in outcomes if shutting_down(o)]
    unreached = [o for o in outcomes if o.code == grpc.StatusCode.UNAVAILABLE and not shutting_down(o)]
    assert all(o.correct for o in ok)
    # the signal came mid-load: requests sent before it were answered after it
    assert any(o.sent < signalled < o.done for o in ok), "no request was in flight at SIGTERM"
    assert int(IN_FLIGHT.search(server.output()).group(1)) > 0, server.output()
    # no request failed for any other reason than the server going away, and only after the signal
    assert all(o.done > signalled for o in refused + unreached)
    accepted, answered, refused_count = server.stopped_line()
    assert accepted == answered == len(ok), (accepted, answered, len(ok), codes)
    assert refused_count == len(refused) > 0  # the clients answered while draining asked again and were refused
    assert len(unreached) >= CLIENTS  # each client's last request went to the exited server


def health_status(stub: health_pb2_grpc.HealthStub) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


@pytest.mark.parametrize("front", FRONTS)
def test_a_request_after_shutdown_began_is_refused_while_the_one_in_flight_is_answered(start_server, front):
    # batching waits up to 3 s for more samples: a lone request stays in flight that long
    server = start_server("--front", front, "--max-batch-size", "1000", "--max-latency-micros", "3000000")
    with grpc.insecure_channel(server.address) as channel:
        predictions, health = prediction_service_pb2_grpc.PredictionServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        assert health_status(health) == health_pb2.HealthCheckResponse.SERVING
        sent = time.monotonic()
        first = predictions.Predict.future(predict_request(np.ones((3, FEATURES), np.float32)), timeout=30)
        time.sleep(0.5)
        assert not first.done()
        server.proc.send_signal(signal.SIGTERM)

        deadline = time.monotonic() + 2
        while health_status(health) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health did not turn NOT_SERVING on SIGTERM"
            time.sleep(0.02)
        assert server.proc.poll() is None and not first.done()  # draining, the first request still waits

        with pytest.raises(grpc.RpcError) as second:
            predictions.Predict(predict_request(np.ones((1, FEATURES), np.float32)), timeout=10)
        assert second.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in second.value.details()

        y = to_array(first.result().outputs["probabilities"], "probabilities")
        assert time.monotonic() - sent >= 2.9  # it waited out its batch delay while the server drained
        assert y.shape == (3, CLASSES)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    assert server.proc.wait(timeout=60) == 0, server.output()
    assert "cpu server: shutting down, 1 request(s) in flight" in server.output()
    assert server.stopped_line() == (1, 1, 1)
