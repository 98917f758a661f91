"""Each service installs with only what it needs: the operator's distribution, installed alone into a fresh
virtual environment from PyPI, imports without TensorFlow, Keras, hls4ml or gRPC, and the `fpgaflow` command
there says in one line which distribution a missing command needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

HEAVY = ("tensorflow", "keras", "hls4ml", "hgq", "grpc", "numpy", "matplotlib")
PROBE = f"""
import json, sys
import fpgaflow_operator.handlers, fpgaflow.summary, fpgaflow.plan, fpgaflow.spec
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory):
    """A venv holding the core's base and the operator distribution, and nothing else of fpgaflow."""
    folder = tmp_path_factory.mktemp("operator-venv")
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           str(ROOT), str(ROOT / "operator")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


def test_the_operator_imports_without_the_ml_stack(operator_env):
    installed = subprocess.run([str(operator_env / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                               capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"fpgaflow", "fpgaflow-operator", "kopf", "kubernetes"} <= names
    assert not names & {"tensorflow", "keras", "hls4ml", "grpcio", "numpy", "fpgaflow-trainer", "fpgaflow-inference"}
    # run outside the checkout, so that the installed packages are imported, not the source folders
    done = subprocess.run([str(operator_env / "bin" / "python"), "-c", PROBE], capture_output=True, text=True,
                          cwd=operator_env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_a_missing_service_command_names_its_distribution(operator_env):
    fpgaflow = str(operator_env / "bin" / "fpgaflow")
    done = subprocess.run([fpgaflow, "train", "--trial-dir", "t00"], capture_output=True, text=True, cwd=operator_env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fpgaflow train: this command needs the fpgaflow-trainer distribution, which is not installed here "
        "(pip install fpgaflow-trainer, or `make install` in a checkout)"]
    listed = subprocess.run([fpgaflow, "--help"], capture_output=True, text=True, cwd=operator_env).stdout
    assert "(not installed: needs fpgaflow-inference)" in listed
    valid = subprocess.run([fpgaflow, "validate", str(ROOT / "examples" / "jet-tagger.yaml")], capture_output=True,
                           text=True, cwd=operator_env)
    assert valid.returncode == 0 and "valid Experiment 'jet-tagger'" in valid.stdout, valid.stderr


def test_every_command_is_there_where_everything_is_installed():
    listed = subprocess.run([sys.executable, "-m", "fpgaflow", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "validate", "train", "convert", "serve", "bench", "report", "generate", "server", "submit",
                    "queue", "cancel", "watch", "logs", "resources"):
        assert re.search(rf"^    {command}\s", listed, re.M), command
    assert "not installed" not in listed
