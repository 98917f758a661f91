from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane

NAMESPACE = "fpgaflow"


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="package")
def helm(control_plane):
    import subprocess

    from tests.cluster.controlplane import binary

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(binary("helm")), "--kubeconfig", str(control_plane.admin_kubeconfig), *args],
                              capture_output=True, text=True, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    return run


@pytest.fixture(scope="package")
def installed(control_plane, helm):
    """The chart installed into its namespace, as a user would: helm install."""
    helm("install", "fpgaflow", "charts/fpgaflow", "--namespace", NAMESPACE, "--create-namespace")
    return NAMESPACE


@pytest.fixture(scope="package")
def real_cluster(tmp_path_factory):
    """A control plane with a real node beside it (tests/cluster/node), the images of `make images` imported.
    Everything it starts, it stops."""
    from tests.cluster.node.cluster import running
    from tests.cluster.node.node import remove_tree

    work = tmp_path_factory.mktemp("real-node")
    try:
        with running(work / "cp", work / "node") as (plane, node):
            yield plane, node
    finally:
        remove_tree(work)


@dataclass
class OnNode:
    """The chart installed on the real node by the README's helm step, and a Prometheus that discovers the pods
    through the Kubernetes API with the scrape job of charts/prometheus-kubernetes.yaml."""

    plane: Any
    node: Any
    artifacts: Path  # the node's folder behind the chart's artifacts claim
    steps: Any
    prometheus: Any

    def experiment(self, name: str, namespace: str = NAMESPACE) -> dict:
        from tests.cluster.kube import get_json

        return get_json(self.plane, "experiment", name, "-n", namespace)

    def explain(self, namespace: str = NAMESPACE) -> str:
        """What a person would look at when something hangs: the pods, the events, the operator's log."""
        def out(*args: str) -> str:
            return self.plane.kubectl(*args, check=False).stdout

        return "\n".join([out("get", "pods,jobs,deployments", "-n", namespace, "-o", "wide"),
                          out("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")[-4000:],
                          out("logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator", "--tail=60")])


@pytest.fixture(scope="package")
def on_node(real_cluster, tmp_path_factory):
    import yaml

    from fpgaflow.prometheus import LocalPrometheus
    from tests.cluster.controlplane import binary
    from tests.cluster.kube import Steps, readme_steps
    from tests.cluster.node.cluster import CHART_CLAIM
    from tests.conftest import ROOT

    plane, node = real_cluster
    artifacts = node.local_volume("fpgaflow-artifacts", claim=CHART_CLAIM)
    [job] = yaml.safe_load((ROOT / "charts" / "prometheus-kubernetes.yaml").read_text())["scrape_configs"]
    job["scrape_interval"] = job["scrape_timeout"] = "2s"  # several scrapes of a two-epoch training
    job["kubernetes_sd_configs"][0]["kubeconfig_file"] = str(plane.admin_kubeconfig)
    prometheus = LocalPrometheus(tmp_path_factory.mktemp("node-prometheus"), jobs=(), interval=2, scrape_configs=(job,),
                                 binary=str(binary("prometheus")))  # with Kubernetes service discovery (make node)
    steps = Steps(plane.admin_kubeconfig)
    try:
        for line in readme_steps():
            if line.startswith("helm "):
                steps.run(line)
        yield OnNode(plane, node, artifacts, steps, prometheus)
    finally:
        prometheus.stop()
