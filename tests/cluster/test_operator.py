"""The operator against a real API server, under the chart's ServiceAccount (so RBAC is exercised).

No kubelet runs: ``FakeKubelet`` stands in for it. It runs each Job's container command locally
against the trial folder and reports the outcome in the Job's status, and for each Deployment it
starts the server locally and reports it available. Cluster DNS is the one other thing it stands in
for: before a bench Job runs, it points the trial's endpoints at the local servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fpgaflow.processes import free_port
from fpgaflow_inference.loadgen import health_ok
from tests.cluster.conftest import NAMESPACE
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
    return {"apiVersion": "fpgaflow.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": base}


class FakeKubelet:
    def __init__(self, plane, namespace: str):
        self.plane, self.namespace = plane, namespace
        self.handled: set[str] = set()
        self.servers: dict[str, tuple[subprocess.Popen, str]] = {}
        self.seen: list[tuple[str, str]] = []  # (kind, name) in the order they appeared

    def _list(self, kind: str) -> list[dict]:
        selector = "app.kubernetes.io/managed-by=fpgaflow-operator"  # children of Experiments, not the chart's own
        return json.loads(self.plane.kubectl("get", kind, "-n", self.namespace, "-l", selector, "-o", "json").stdout)["items"]

    def _patch_status(self, kind: str, name: str, status: dict) -> None:
        self.plane.kubectl("patch", kind, name, "-n", self.namespace, "--subresource=status", "--type=merge",
                           "-p", json.dumps({"status": status}))

    def step(self, run_jobs: bool = True) -> None:
        for dep in self._list("deployments"):
            name = dep["metadata"]["name"]
            if name in self.handled:
                continue
            self.handled.add(name)
            self.seen.append(("Deployment", name))
            args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            port, metrics = free_port(), free_port()
            args = _replace(args, {"--host": "127.0.0.1", "--port": str(port), "--metrics-port": str(metrics)})
            proc = subprocess.Popen([sys.executable, "-m", "fpgaflow", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            address = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while not health_ok(address):
                assert proc.poll() is None and time.monotonic() < deadline, f"server of {name} did not come up"
                time.sleep(0.3)
            self.servers[name] = (proc, address)
            self._patch_status("deployment", name, {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1})
        if not run_jobs:
            for job in self._list("jobs"):
                if ("Job", job["metadata"]["name"]) not in self.seen:
                    self.seen.append(("Job", job["metadata"]["name"]))
            return
        for job in self._list("jobs"):
            name = job["metadata"]["name"]
            if name in self.handled:
                continue
            self.handled.add(name)
            if ("Job", name) not in self.seen:
                self.seen.append(("Job", name))
            container = job["spec"]["template"]["spec"]["containers"][0]
            args = container["args"]
            if args[0] == "bench":
                self._point_endpoints_at_local_servers(Path(args[2]), job["metadata"]["labels"])
            if "--metrics-port" in args:  # the pod's port, here one free on loopback
                args = _replace(args, {"--metrics-host": "127.0.0.1", "--metrics-port": str(free_port()), "--metrics-linger": "0"})
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            done = subprocess.run([sys.executable, "-m", "fpgaflow", *args], capture_output=True, text=True, timeout=600)
            self._patch_status("job", name, {"startTime": started, **({"succeeded": 1} if done.returncode == 0 else {"failed": 1})})

    def _point_endpoints_at_local_servers(self, trial: Path, labels: dict) -> None:
        path = trial / "serve" / "endpoints.json"
        endpoints = json.loads(path.read_text())
        for target, info in endpoints.items():
            if info["status"] == "ready":
                server = next(v for k, v in self.servers.items() if k.endswith(f"-{labels['fpgaflow.io/trial']}-{target}"))
                info["address"] = server[1]
        path.write_text(json.dumps(endpoints))

    def stop(self) -> None:
        for proc, _ in self.servers.values():
            proc.terminate()
        for proc, _ in self.servers.values():
            proc.wait(timeout=30)


def _replace(args: list[str], values: dict[str, str]) -> list[str]:
    out = list(args)
    for flag, value in values.items():
        out[out.index(flag) + 1] = value
    return out


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


def get(plane, name: str) -> dict:
    return json.loads(plane.kubectl("get", "experiment", name, "-n", NAMESPACE, "-o", "json").stdout)


def apply(plane, manifest: dict) -> None:
    plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(manifest))


def wait_for(predicate, timeout: float, step=None, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step:
            step()
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_experiment_runs_to_succeeded_under_the_operator(control_plane, installed, artifacts):
    operator = Operator(control_plane, artifacts).start()
    kubelet = FakeKubelet(control_plane, NAMESPACE)
    phases: list[str] = []
    try:
        apply(control_plane, tiny("e2e"))

        def phase():
            status = get(control_plane, "e2e").get("status") or {}
            if status.get("phase") and (not phases or phases[-1] != status["phase"]):
                phases.append(status["phase"])
            return status.get("phase") in ("Succeeded", "Failed")

        wait_for(phase, 600, step=kubelet.step, what="the Experiment to finish")
        status = get(control_plane, "e2e")["status"]
        assert status["phase"] == "Succeeded", (status, (artifacts.parent / "operator.log").read_text()[-3000:])
        assert phases[0] in ("Pending", "Running") and "Running" in phases and phases[-1] == "Succeeded"
        assert status["trialsSummary"] == "1/1" and status["bestTrial"] == "t00"
        [trial] = status["trials"]
        assert trial["accuracy"]["float"] > 0.5 and trial["accuracy"]["emulated"] > 0.5
        assert trial["unavailable"] == {"gpu": "no node offers nvidia.com/gpu"}
        assert {"cpu@2", "fpga@2"} <= set(trial["benchmark"])
        assert [c["type"] for c in status["conditions"]] == ["Validated"]
        # children in order, each created once, owned by the Experiment
        names = [n for _, n in kubelet.seen]
        assert names.index("e2e-t00-train") < names.index("e2e-t00-convert") < names.index("e2e-t00-cpu") < names.index("e2e-t00-bench")
        assert "e2e-t00-gpu" not in names, "no GPU Deployment where no node has a GPU"
        jobs = json.loads(control_plane.kubectl("get", "jobs", "-n", NAMESPACE, "-l", "fpgaflow.io/experiment=e2e", "-o", "json").stdout)["items"]
        assert sorted(j["metadata"]["name"] for j in jobs) == ["e2e-t00-bench", "e2e-t00-convert", "e2e-t00-train"]
        for job in jobs:
            [owner] = job["metadata"]["ownerReferences"]
            assert owner["kind"] == "Experiment" and owner["name"] == "e2e"
            assert job["metadata"]["labels"]["fpgaflow.io/trial"] == "t00"
        services = control_plane.kubectl("get", "services", "-n", NAMESPACE, "-l", "fpgaflow.io/experiment=e2e", "-o", "name").stdout.split()
        assert sorted(services) == ["service/e2e-t00-cpu", "service/e2e-t00-fpga"]
        printed = control_plane.kubectl("get", "experiments", "-n", NAMESPACE, "e2e").stdout
        assert "Succeeded" in printed and "1/1" in printed

        deleted = control_plane.kubectl("delete", "experiment", "e2e", "-n", NAMESPACE, "--wait=true", "--timeout=60s", check=False)
        left = control_plane.kubectl("get", "experiment", "e2e", "-n", NAMESPACE, "-o", "json", check=False)
        assert deleted.returncode == 0, (deleted.stderr, left.stdout[:1500], (artifacts.parent / "operator.log").read_text()[-4000:])
        # Kubernetes' garbage collector (kube-controller-manager) removes what the Experiment owned
        deadline = time.monotonic() + 60
        while left := control_plane.kubectl("get", "jobs,deployments,services", "-n", NAMESPACE,
                                            "-l", "fpgaflow.io/experiment=e2e", "-o", "name").stdout.strip():
            assert time.monotonic() < deadline, f"children outlived their Experiment: {left}"
            time.sleep(0.5)
    finally:
        operator.kill()
        kubelet.stop()


def test_a_failed_stage_fails_the_trial_with_its_reason(control_plane, installed, artifacts):
    operator = Operator(control_plane, artifacts).start()
    kubelet = FakeKubelet(control_plane, NAMESPACE)
    try:
        apply(control_plane, tiny("fails", hls={"precision": "ap_fixed<4,2>", "minAgreement": 1.0}, serve={"targets": ["fpga"]}))
        wait_for(lambda: (get(control_plane, "fails").get("status") or {}).get("phase") in ("Succeeded", "Failed"), 600,
                 step=kubelet.step, what="the Experiment to finish")
        status = get(control_plane, "fails")["status"]
        assert status["phase"] == "Failed"
        [trial] = status["trials"]
        assert (trial["phase"], trial["stage"], trial["reason"]) == ("Failed", "convert", "FidelityCheckFailed")
        assert "minAgreement" in trial["message"]
        assert not any(n.endswith("-fpga") for _, n in kubelet.seen), "nothing is served after a failed conversion"

        # an edited spec does not reuse (or overwrite) the trial folders of the old one: it is a condition
        control_plane.kubectl("patch", "experiment", "fails", "-n", NAMESPACE, "--type=merge",
                              "-p", json.dumps({"spec": {"hls": {"reuseFactor": 2}}}))

        def stale():
            conditions = {c["type"]: c for c in get(control_plane, "fails")["status"].get("conditions", [])}
            return conditions.get("Reconciled")

        condition = wait_for(stale, 60, what="the Reconciled condition")
        assert (condition["status"], condition["reason"]) == ("False", "ResultExists")
        assert "create a new Experiment" in condition["message"]
        assert len(kubelet._list("jobs")) == 2, "nothing new runs for the edited spec"
    finally:
        control_plane.kubectl("delete", "experiment", "fails", "-n", NAMESPACE, "--wait=true", "--timeout=60s", check=False)
        operator.kill()
        kubelet.stop()


def test_limits_hold_and_a_restarted_operator_creates_no_duplicates(control_plane, installed, artifacts):
    operator = Operator(control_plane, artifacts, FPGAFLOW_MAX_RUNNING_TRIALS="3").start()
    kubelet = FakeKubelet(control_plane, NAMESPACE)
    sweep = {"parallelTrials": 2, "parameters": {"hls.reuseFactor": [1, 2, 4]}}
    try:
        apply(control_plane, tiny("sweep-a", sweep=sweep))
        apply(control_plane, tiny("sweep-b", sweep=sweep))

        def train_jobs():
            kubelet.step(run_jobs=False)  # Jobs stay active: nothing finishes
            return [n for _, n in kubelet.seen if n.endswith("-train")]

        wait_for(lambda: len(train_jobs()) >= 3, 120, what="three trials to start")
        time.sleep(4)  # several more reconciliations: nothing else may start
        started = train_jobs()
        assert len(started) == 3, f"the operator-wide limit of 3 running trials was exceeded: {started}"
        a = get(control_plane, "sweep-a")["status"]
        b = get(control_plane, "sweep-b")["status"]
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
        kubelet.stop()
