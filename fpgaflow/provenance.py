"""Where a result came from: the code's and the manifest's git state, package versions, the host.

The train stage writes ``train/git.json`` and ``train/host.json``; the local runner also records the
manifest folder's git state in ``experiment.json`` and the run store.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("fpgaflow", "tensorflow", "keras", "hls4ml", "numpy", "grpcio", "protobuf", "tensorflow-serving-api",
            "prometheus-client", "kopf", "kubernetes", "pydantic")
CODE_FOLDER = Path(__file__).resolve().parent


def git_info(folder: Path) -> dict:
    """Commit, branch, dirty flag and origin remote of the git work tree holding ``folder``."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "folder": str(folder)}
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "remote": git("remote", "get-url", "origin"),
        "root": git("rev-parse", "--show-toplevel"),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def memory_bytes() -> dict[str, int | None]:
    """Total and available memory from /proc/meminfo (Linux); None where unknown."""
    fields = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return {"total": fields.get("MemTotal"), "available": fields.get("MemAvailable")}


def host_facts(folder: Path, gpus: list[str] | None = None) -> dict:
    """The machine a stage ran on; ``folder`` is where its disk space is measured."""
    disk = shutil.disk_usage(folder)
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "disk_bytes": {"total": disk.total, "free": disk.free},
        "gpus": gpus or [],
        "packages": package_versions(),
    }
