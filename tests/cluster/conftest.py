from __future__ import annotations

import pytest

from tests.cluster.controlplane import ControlPlane

NAMESPACE = "fpgaflow"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def installed(control_plane, helm):
    """The chart installed into its namespace, as a user would: helm install."""
    helm("install", "fpgaflow", "charts/fpgaflow", "--namespace", NAMESPACE, "--create-namespace")
    return NAMESPACE


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory):
    """A control plane with a real node beside it (tests/cluster/node), the images of `make images` imported,
    and a local volume for an artifacts claim to bind. Everything it starts, it stops."""
    from tests.cluster.controlplane import ControlPlane
    from tests.cluster.node.node import Node, podman_command, remove_tree
    from tests.conftest import ROOT

    work = tmp_path_factory.mktemp("real-node")
    node = Node(work / "node").prepare()
    plane = ControlPlane(work / "cp", address=node.gateway, real_pods=True)
    try:
        plane.start()
        node.start(plane, images=["docker.io/fpgaflow/operator:0.1.0"], podman=podman_command(ROOT / ".cache" / "containers"))
        yield plane, node, node.local_volume("artifacts")
    finally:
        node.stop()
        plane.stop()
        node.remove_network()
        remove_tree(work)
