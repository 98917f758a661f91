"""The operator's limits against a real API server with no node: the operator runs here, under the chart's
ServiceAccount (so RBAC is exercised), and the Jobs it creates stay active, as nothing runs their pods. What
a real node runs end to end, and its faults, are in test_kubernetes.py and test_kubernetes_faults.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import NAMESPACE
from tests.cluster.kube import apply, experiment, get_json, wait_for
from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def tiny(name: str, **spec) -> dict:
    base = {
        "dataset": {"name": "jets", "samples": 5000, "seed": 5},
        "model": {"layers": [16]},
        "train": {"epochs": 4, "batchSize": 128, "learningRate": 0.01},
        "serve": {"targets": ["cpu", "gpu", "fpga"]},
        "benchmark": {"concurrency": [2], "requestsPerClient": 20, "warmup": 2},
    }
    base.update(spec)
    return experiment(name, base)


class Operator:
    def __init__(self, plane, artifacts: Path, **env: str):
        self.plane, self.artifacts, self.env = plane, artifacts, env
        self.kubeconfig = plane.service_account_kubeconfig(NAMESPACE, "fpgaflow-operator")
        self.proc: subprocess.Popen | None = None
        self.log = artifacts.parent / "operator.log"

    def start(self) -> Operator:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "FPGAFLOW_ARTIFACTS_ROOT": str(self.artifacts),
               "FPGAFLOW_RECONCILE_INTERVAL": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "-m", "fpgaflow_operator.handlers", "--namespace", NAMESPACE],
            env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def artifacts(tmp_path):
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


def test_limits_hold_and_a_restarted_operator_creates_no_duplicates(control_plane, installed, artifacts):
    operator = Operator(control_plane, artifacts, FPGAFLOW_MAX_RUNNING_TRIALS="3").start()
    sweep = {"parallelTrials": 2, "parameters": {"hls.reuseFactor": [1, 2, 4]}}
    try:
        apply(control_plane, tiny("sweep-a", sweep=sweep), NAMESPACE)
        apply(control_plane, tiny("sweep-b", sweep=sweep), NAMESPACE)

        def train_jobs():  # they stay active: no node runs them
            jobs = json.loads(control_plane.kubectl("get", "jobs", "-n", NAMESPACE, "-o", "json").stdout)["items"]
            return [j["metadata"]["name"] for j in jobs if j["metadata"]["name"].endswith("-train")]

        wait_for(lambda: len(train_jobs()) >= 3, 120, "three trials to start")
        time.sleep(4)  # several more reconciliations: nothing else may start
        started = train_jobs()
        assert len(started) == 3, f"the operator-wide limit of 3 running trials was exceeded: {started}"
        a = get_json(control_plane, "experiment", "sweep-a", "-n", NAMESPACE)["status"]
        b = get_json(control_plane, "experiment", "sweep-b", "-n", NAMESPACE)["status"]
        assert a["runningTrials"] <= 2 and b["runningTrials"] <= 2, "parallelTrials was exceeded"
        assert a["runningTrials"] + b["runningTrials"] == 3
        queued = [t["name"] for s in (a, b) for t in s["trials"] if t["phase"] == "Queued"]
        assert len(queued) == 3

        operator.kill()
        operator = Operator(control_plane, artifacts, FPGAFLOW_MAX_RUNNING_TRIALS="3").start()
        time.sleep(8)
        jobs = json.loads(control_plane.kubectl("get", "jobs", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        names = [j["metadata"]["name"] for j in jobs if j["metadata"]["labels"]["fpgaflow.io/experiment"] in ("sweep-a", "sweep-b")]
        assert sorted(names) == sorted(started), "a restarted operator created other Jobs"
    finally:
        for name in ("sweep-a", "sweep-b"):
            control_plane.kubectl("delete", "experiment", name, "-n", NAMESPACE, "--wait=true", "--timeout=60s", check=False)
        operator.kill()
