"""Helpers of the cluster tests: kubectl's JSON, waiting, and the README's Kubernetes steps."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fpgaflow.spec import API_VERSION
from tests.cluster.controlplane import ENVTEST_BIN, ControlPlane
from tests.conftest import ROOT

README = ROOT / "README.md"
STEPS_MARK = "<!-- kubernetes-steps"
T = TypeVar("T")


def get_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)


def experiment(name: str, spec: dict) -> dict:
    """An Experiment manifest of ``spec``."""
    return {"apiVersion": API_VERSION, "kind": "Experiment", "metadata": {"name": name}, "spec": spec}


def apply(plane: ControlPlane, manifest: dict, namespace: str) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "condition", every: float = 1.0,
             explain: Callable[[], str] = lambda: "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")
        time.sleep(every)


def readme_steps() -> list[str]:
    """The lines of the README's one-node Kubernetes block (the one after the kubernetes-steps mark)."""
    text = README.read_text()
    assert STEPS_MARK in text, "the README lost its Kubernetes steps"
    block = text.split(STEPS_MARK, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@dataclass
class Steps:
    """Runs README lines as a user's shell would after its `export` line: kubectl and helm from the envtest
    folder, KUBECONFIG the cluster's admin kubeconfig, in the repository's root."""

    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{ENVTEST_BIN}:{os.environ['PATH']}"}

    def command(self, line: str) -> list[str]:
        words = shlex.split(line)
        assert words[0] in ("kubectl", "helm"), f"not a kubectl or helm step: {line}"
        return [str(ENVTEST_BIN / words[0]), *words[1:]]

    def run(self, line: str, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(line), capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=timeout)
        assert done.returncode == 0, f"{line}\nexited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done

    def start(self, line: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(line), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env, cwd=ROOT)
