"""Live metrics in a local run: `fpgaflow run` starts its own Prometheus (Debian's binary), which scrapes
the trainer and every server while they run; the run leaves every dashboard panel's series and a plot
of them, and stops Prometheus. Also: a target added while Prometheus runs is scraped."""

from __future__ import annotations

import csv
import json
import math
import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fpgaflow.cli import build_parser
from fpgaflow.processes import free_port
from fpgaflow.prometheus import NOT_INSTALLED, SERVERS_JOB, LocalPrometheus, PrometheusError
from fpgaflow.runner import LocalRunner, RunSettings
from fpgaflow.spec import load_experiment
from tests.conftest import fpgaflow

# short: 2 epochs of a small model, and a benchmark of about two seconds per target (several scrapes)
MANIFEST = """\
apiVersion: fpgaflow.io/v1alpha1
kind: Experiment
metadata: {name: live-jets}
spec:
  dataset: {name: jets, samples: 6000, seed: 3}
  model: {layers: [16]}
  train: {epochs: 2, batchSize: 256}
  hls: {precision: "ap_fixed<16,6>"}
  serve: {targets: [cpu, fpga]}
  benchmark: {concurrency: [2], requestsPerClient: 1000, warmup: 5}
"""
SERVING = ("Throughput by target", "Request latency p50 by target", "Request latency p99 by target")


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("live")
    manifest = base / "live.yaml"
    manifest.write_text(MANIFEST)
    done = fpgaflow("run", str(manifest), "--home", str(base / "home"), check=False, timeout=600)
    folder = base / "home" / "experiments" / "live-jets"
    return {"result": done, "folder": folder, "prometheus": folder / "prometheus"}


def _finite(series: dict) -> list[float]:
    return [float(v) for _, v in series["values"] if math.isfinite(float(v))]


def _processes_with(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return pids


@pytest.mark.slow
def test_the_run_prints_where_prometheus_is_and_stops_it(live_run):
    done = live_run["result"]
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"live metrics: Prometheus at (http://127\.0\.0\.1:\d+); the dashboards' PromQL works there", done.stdout)
    assert found, done.stdout
    assert NOT_INSTALLED not in done.stdout
    # stopped: nothing answers there, and no prometheus process holds the experiment's data any more
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{found.group(1)}/-/ready", timeout=3)
    assert _processes_with(f"--storage.tsdb.path={live_run['prometheus'] / 'data'}") == []
    assert (live_run["prometheus"] / "data").is_dir()  # its data stays in the experiment's folder


@pytest.mark.slow
def test_panels_show_every_ready_target_and_the_training(live_run):
    doc = json.loads((live_run["prometheus"] / "panels.json").read_text())
    panels = doc["panels"]
    endpoints = json.loads((live_run["folder"] / "t00" / "serve" / "endpoints.json").read_text())
    ready = {target for target, e in endpoints.items() if e["status"] == "ready"}
    assert ready == {"cpu", "fpga"}
    for title in SERVING:
        series = panels[title]["A"]["series"]
        shown = {s["metric"]["target"] for s in series if any(v > 0 for v in _finite(s))}
        assert shown == ready, (title, [(s["metric"], s["values"][:3]) for s in series])
        assert "$" not in panels[title]["A"]["expr"]
    # the training panels: the trial's epochs as the trainer recorded them, for this experiment only
    assert 'experiment=~"live-jets"' in panels["Training loss"]["A"]["expr"]
    progress = panels["Training progress"]["A"]["series"]
    assert [s["metric"]["trial"] for s in progress] == ["t00"] and max(_finite(progress[0])) == 1.0
    losses = panels["Training loss"]["A"]["series"]
    assert {s["metric"]["split"] for s in losses} == {"train", "validation"}
    history = json.loads((live_run["folder"] / "t00" / "train" / "history.json").read_text())["epochs"]
    recorded = {round(e[k], 6) for e in history for k in ("loss", "val_loss")}
    assert {round(v, 6) for s in losses for v in _finite(s)} <= recorded
    assert doc["end"] > doc["start"] and doc["experiment"] == "live-jets"


@pytest.mark.slow
def test_the_prometheus_view_is_a_png_beside_its_csv(live_run):
    assert (live_run["prometheus"] / "prometheus.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((live_run["prometheus"] / "prometheus.csv").open()))
    plotted = {(r["panel"], r["series"]) for r in rows}
    assert {("Throughput by target", "cpu requests/s"), ("Throughput by target", "fpga requests/s"),
            ("Training loss", "live-jets/t00 train")} <= plotted
    assert all(float(r["seconds"]) >= 0 for r in rows)
    for report in ("report.md", "report.html"):  # the report shows it
        assert "prometheus/prometheus.png" in (live_run["folder"] / report).read_text()


@pytest.mark.slow
def test_a_target_added_while_prometheus_runs_is_scraped_and_removed(tmp_path):
    registry = CollectorRegistry()
    Gauge("fpgaflow_test_answer", "A value to scrape.", registry=registry).set(42)
    port = free_port()
    address = f"127.0.0.1:{port}"
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with LocalPrometheus(tmp_path / "prometheus") as prom:
            assert prom.query("up") == []
            added = time.time()
            prom.add_target(SERVERS_JOB, address, {"trial": "t09"})
            written = json.loads((tmp_path / "prometheus" / "targets" / f"{SERVERS_JOB}.json").read_text())
            assert written == [{"targets": [address], "labels": {"trial": "t09"}}]
            assert prom.await_scrape(address, after=added, timeout=30), prom.active_targets()
            [sample] = prom.query("fpgaflow_test_answer")
            assert sample["value"][1] == "42"
            assert sample["metric"]["job"] == SERVERS_JOB and sample["metric"]["trial"] == "t09"
            prom.remove_target(SERVERS_JOB, address)
            deadline = time.monotonic() + 30
            while prom.active_targets():
                assert time.monotonic() < deadline, "the removed target is still scraped"
                time.sleep(0.5)
        assert prom.proc.poll() is not None
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_without_the_binary_the_runner_says_so_once_and_goes_on(tmp_path, monkeypatch):
    manifest = tmp_path / "live.yaml"
    manifest.write_text(MANIFEST)
    notes = []
    runner = LocalRunner(load_experiment(manifest), manifest, RunSettings(home=tmp_path / "home"),
                         progress=lambda trial, what: notes.append((trial, what)))
    monkeypatch.setattr("fpgaflow.prometheus.shutil.which", lambda name: None)
    runner._start_live_metrics()
    assert runner.prometheus is None and notes == [("", NOT_INSTALLED)]
    runner._finish_live_metrics()  # nothing to summarize, nothing said
    assert runner.live_metrics == {} and len(notes) == 1
    args = build_parser().parse_args(["run", str(manifest), "--no-prometheus"])
    assert args.no_prometheus and not build_parser().parse_args(["run", str(manifest)]).no_prometheus


def test_a_prometheus_that_does_not_start_says_why(tmp_path):
    script = tmp_path / "prometheus"
    script.write_text("#!/bin/sh\necho 'err: opening storage failed: lock DB directory: resource temporarily unavailable'\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(PrometheusError, match="did not start(.|\n)*lock DB directory"):
        LocalPrometheus(tmp_path / "prometheus-data", binary=str(script), start_timeout=10)
