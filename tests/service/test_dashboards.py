"""Every panel of the Grafana dashboard returns data from a real Prometheus scraping real fpgaflow
servers (cpu and fpga) under load and a real training run, queried over a time range as Grafana does."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from fpgaflow import prometheus as prometheus_queries
from fpgaflow.dashboards import ALL, DASHBOARD_PATH, panel_queries
from fpgaflow.processes import free_port
from fpgaflow.prometheus import SERVERS_JOB, TRAINING_JOB, LocalPrometheus
from fpgaflow_inference.tensors import from_array
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

RATE_WINDOW = "10s"  # what Grafana's $__rate_interval gives at this scrape interval and step


def substitute(expr: str) -> str:
    """The query as Grafana sends it with every variable at "All"."""
    return prometheus_queries.substitute(expr, model=ALL, experiment=ALL, rate_window=RATE_WINDOW)


def _load(address: str, x: np.ndarray, stop: threading.Event) -> None:
    """Good requests of batch 1 and 8, and now and then a request of the wrong shape."""
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        i = 0
        while not stop.is_set():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny-jets"
            batch = x[i % 100: i % 100 + (8 if i % 2 else 1)]
            if i % 10 == 9:
                batch = batch[:, :3]
            request.inputs["features"].CopyFrom(from_array(batch))
            try:
                stub.Predict(request, timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            i += 1
            time.sleep(0.005)


@pytest.fixture(scope="module")
def scraped(tiny_run, servers, tmp_path_factory):
    """Prometheus scraping the cpu and fpga servers under load and a trainer while it trains."""
    folder = tmp_path_factory.mktemp("prometheus")
    trainer_port = free_port()
    servers_metrics = [urllib.parse.urlparse(s["metrics"]).netloc for s in servers.values()]
    prometheus = LocalPrometheus(folder / "prometheus", {SERVERS_JOB: {address: {} for address in servers_metrics},
                                                         TRAINING_JOB: {f"127.0.0.1:{trainer_port}": {}}})

    # a second trial of the same experiment, trained with live metrics
    trial = folder / "tiny-jets" / "t01"
    trial.mkdir(parents=True)
    meta = json.loads((tiny_run["trial"] / "spec.json").read_text())
    meta["trial"] = "t01"
    meta["spec"]["train"]["epochs"] = 6
    (trial / "spec.json").write_text(json.dumps(meta))

    x = np.load(tiny_run["trial"] / "train" / "testset.npz")["x"][:200]
    stop = threading.Event()
    loaders = [threading.Thread(target=_load, args=(s["address"], x, stop), daemon=True) for s in servers.values()]
    start = time.time()
    for t in loaders:
        t.start()
    try:
        done = subprocess.run([sys.executable, "-m", "fpgaflow", "train", "--trial-dir", str(trial),
                               "--metrics-port", str(trainer_port), "--metrics-linger", "3"], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(3)  # a few more scrapes of the servers under load
    finally:
        stop.set()
        for t in loaders:
            t.join(timeout=30)
    try:
        yield {"prometheus": prometheus, "start": start, "end": time.time(), "trial": trial}
    finally:
        prometheus.stop()


def _values(series: list[dict]) -> list[float]:
    return [float(v) for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]


DASHBOARD = json.loads((ROOT / DASHBOARD_PATH).read_text())


@pytest.mark.parametrize("title, ref, expr", panel_queries(DASHBOARD), ids=[f"{t}/{r}" for t, r, _ in panel_queries(DASHBOARD)])
def test_every_panel_returns_data(scraped, title, ref, expr):
    series = scraped["prometheus"].query_range(substitute(expr), scraped["start"], scraped["end"])
    assert _values(series), f"panel {title!r} query {ref} returned no data: {substitute(expr)}"


def _panel(title: str) -> list[str]:
    return [substitute(e) for t, _, e in panel_queries(DASHBOARD) if t == title]


def test_latency_and_throughput_compare_the_targets(scraped):
    prom, start, end = scraped["prometheus"], scraped["start"], scraped["end"]
    for title in ("Request latency p50 by target", "Request latency p99 by target", "Throughput by target"):
        targets = {s["metric"]["target"] for s in prom.query_range(_panel(title)[0], start, end) if _values([s])}
        assert targets == {"cpu", "fpga"}, title
    errors = prom.query_range(_panel("Errors by code")[0], start, end)
    # codes other tests caused earlier in the session show as series at rate 0
    assert {(s["metric"]["target"], s["metric"]["code"]) for s in errors if any(_values([s]))} == {
        ("cpu", "INVALID_ARGUMENT"), ("fpga", "INVALID_ARGUMENT")}


def test_modelled_device_latency_follows_the_timing_model(scraped, tiny_run):
    timing = json.loads((tiny_run["trial"] / "convert" / "timing.json").read_text())
    modelled = _values(scraped["prometheus"].query_range(_panel("FPGA: modelled device latency vs measured time")[0],
                                                         scraped["start"], scraped["end"]))
    # requests of 1 and 8 samples: each batch takes latency + (batch - 1) * II cycles
    one, eight = timing["latency_ns"] * 1e-9, (timing["latency_cycles"] + 7 * timing["ii_cycles"]) * timing["clock_period_ns"] * 1e-9
    assert all(one * 0.999 <= v <= eight * 1.001 for v in modelled), (modelled[:5], one, eight)


def test_training_panels_show_the_trial_that_ran(scraped):
    prom, start, end = scraped["prometheus"], scraped["start"], scraped["end"]
    progress = prom.query_range(_panel("Training progress")[0], start, end)
    assert {s["metric"]["trial"] for s in progress} == {"t01"}
    history = json.loads((scraped["trial"] / "train" / "history.json").read_text())["epochs"]
    # what was scraped is what the trainer recorded, epoch by epoch
    assert set(_values(progress)) <= {e / 6 for e in range(7)} and max(_values(progress)) >= 0.5
    losses = prom.query_range(_panel("Training loss")[0], start, end)
    assert {s["metric"]["split"] for s in losses} == {"train", "validation"}
    recorded = {round(e[k], 6) for e in history for k in ("loss", "val_loss")}
    assert {round(v, 6) for v in _values(losses)} <= recorded
