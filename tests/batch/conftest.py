from __future__ import annotations

import os

import pytest

from tests.batch.slurm import SlurmCluster, missing_binaries


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node Slurm cluster (tests/batch/slurm.py), started once, stopped at the end."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm cluster runs its daemons as root (SlurmUser=root): run the tests as root")
    if missing := missing_binaries():
        pytest.skip(f"{', '.join(missing)} missing: apt-get install slurmctld slurmd slurm-client munge")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
