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
