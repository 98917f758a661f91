"""Shared fixtures. Expensive things (a trained and converted experiment, running servers) are
session-scoped and built once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fpgaflow.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
# Simulated data sets (Pythia 8 and FastJet): one cache for the whole suite, its stage subprocesses and `make demo`
# (the default run store's, ignored by git), so each set is made once on a machine and every test reads it.
os.environ.setdefault("FPGAFLOW_DATASETS", str(ROOT / "fpgaflow-runs" / "datasets"))
TINY_MANIFEST = """\
apiVersion: fpgaflow.io/v1alpha1
kind: Experiment
metadata: {name: tiny-jets}
spec:
  dataset: {name: jets, samples: 20000, seed: 3}
  model: {layers: [32, 16]}
  train: {epochs: 3, batchSize: 128, learningRate: 0.005}
  hls: {precision: "ap_fixed<16,6>"}
  serve: {targets: [cpu, gpu, fpga]}
  benchmark: {concurrency: [1, 3], requestsPerClient: 60, warmup: 5}
"""


def fpgaflow(*args: str, check: bool = True, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "fpgaflow", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"fpgaflow {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real local run of a small experiment: train, convert, serve cpu/gpu/fpga, bench, report."""
    base = tmp_path_factory.mktemp("tiny")
    manifest = base / "tiny.yaml"
    manifest.write_text(TINY_MANIFEST)
    home = base / "home"
    done = fpgaflow("run", str(manifest), "--home", str(home), check=False)
    return {"manifest": manifest, "home": home, "result": done,
            "folder": home / "experiments" / "tiny-jets", "trial": home / "experiments" / "tiny-jets" / "t00"}


@contextlib.contextmanager
def serving(trial: Path, targets: dict[str, tuple[str, ...]]):
    """Servers of a trial, started the way the runner starts them ({target: extra flags}), once all answer
    health checks: {target: {"address", "metrics"}}; stopped on exit."""
    from fpgaflow_inference.loadgen import health_ok

    procs, addresses = [], {}
    for target, flags in targets.items():
        port, metrics = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fpgaflow", "serve", "--trial-dir", str(trial), "--target", target,
             "--port", str(port), "--metrics-port", str(metrics), *flags], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        addresses[target] = {"address": f"127.0.0.1:{port}", "metrics": f"http://127.0.0.1:{metrics}/metrics"}
    try:
        deadline = time.monotonic() + 180
        for target, info in addresses.items():
            while not health_ok(info["address"]):
                assert time.monotonic() < deadline, f"{target} server did not come up"
                time.sleep(0.5)
        yield addresses
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.fixture(scope="session")
def servers(tiny_run):
    """cpu and fpga servers of the tiny run."""
    with serving(tiny_run["trial"], {"cpu": (), "fpga": ()}) as addresses:
        yield addresses
