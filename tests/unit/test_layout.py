"""The README's Layout section holds: each package lives in the folder its name says, and the import
directions between the shared core and the services are the ones pyproject.toml's import contracts allow."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# import name -> folder (relative to the repository root): the map in the README's Layout section
PACKAGES = {
    "fpgaflow": "fpgaflow",
    "fpgaflow_trainer": "services/trainer/fpgaflow_trainer",
    "fpgaflow_converter": "services/converter/fpgaflow_converter",
    "fpgaflow_inference": "services/inference/fpgaflow_inference",
    "fpgaflow_manager": "services/manager/fpgaflow_manager",
    "fpgaflow_operator": "operator/fpgaflow_operator",
    "benchmarks": "benchmarks",
}


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_lives_in_the_folder_its_name_says(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == ROOT / PACKAGES[name]


def test_each_service_folder_is_one_distribution_with_its_dockerfile():
    for folder in ("services/trainer", "services/converter", "services/inference", "services/manager", "operator"):
        assert (ROOT / folder / "pyproject.toml").is_file() and (ROOT / folder / "Dockerfile").is_file(), folder


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    contracts = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert f"Contracts: {contracts} kept, 0 broken." in done.stdout
