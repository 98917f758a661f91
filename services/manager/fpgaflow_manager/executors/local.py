"""The local executor: each run is `fpgaflow run` on the server's machine, in a session of its own (so that it
outlives a server that is killed), under ``fpgaflow_manager.job`` (its lock and exit file), its output in the
entry's ``run.log``. A cancel stops the run's whole process group: SIGTERM, then SIGKILL after a grace."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fpgaflow.provenance import memory_bytes
from fpgaflow_manager.executors import FINISHED, LOST, RUNNING, Pool, Status, run_command
from fpgaflow_manager.job import is_locked


def lock_file(folder: Path) -> Path:
    return folder / "run.lock"


def exit_file(folder: Path, attempt: int) -> Path:
    return folder / f"exit-{attempt}.json"


def job_command(folder: Path, attempt: int, run: list[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "fpgaflow_manager.job", "--lock", str(lock_file(folder)), "--exit-file",
            str(exit_file(folder, attempt)), "--", *run]


def read_exit(folder: Path, attempt: int) -> int | None:
    try:
        return int(json.loads(exit_file(folder, attempt).read_text())["code"])
    except (OSError, ValueError, KeyError):
        return None


class LocalExecutor:
    name = "local"

    def __init__(self, home: Path, *, live_metrics: bool = False, grace: float = 15.0, python: str = sys.executable):
        self.home = home
        self.live_metrics = live_metrics
        self.grace = grace
        self.python = python
        self._children: dict[int, subprocess.Popen] = {}  # runs this server started (reaped here)

    def unavailable(self) -> str | None:
        return None

    def log_path(self, entry: dict, folder: Path) -> Path:
        return folder / "run.log"

    def command(self, entry: dict, folder: Path) -> list[str]:
        """What one attempt runs under the job wrapper: `fpgaflow run` here (the Slurm executor's driver there)."""
        return run_command(folder / "manifest.json", self.home, replace=entry["replace_results"],
                           git_file=folder / "git.json", live_metrics=self.live_metrics, python=self.python)

    def start(self, entry: dict, folder: Path) -> dict:
        run = self.command(entry, folder)
        with self.log_path(entry, folder).open("ab") as log:
            log.write(f"--- attempt {entry['attempt']} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            proc = subprocess.Popen(job_command(folder, entry["attempt"], run, self.python), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._children[entry["id"]] = proc
        return {"pgid": proc.pid, "host": socket.gethostname()}

    def poll(self, entry: dict, folder: Path) -> Status:
        child = self._children.get(entry["id"])
        if child is not None:
            if child.poll() is None:
                return Status(RUNNING)
            del self._children[entry["id"]]  # reaped: its exit file is written
        elif is_locked(lock_file(folder)):  # a run started by an earlier server, still going
            return Status(RUNNING)
        code = read_exit(folder, entry["attempt"])
        if code is None:
            return Status(LOST, message=f"attempt {entry['attempt']} ended without an exit code (killed)")
        return Status(FINISHED, code)

    def cancel(self, entry: dict, folder: Path) -> None:
        pgid = (entry.get("handle") or {}).get("pgid")
        if not pgid:
            return
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and group_alive(pgid):
                child = self._children.get(entry["id"])
                if child is not None:
                    child.poll()
                time.sleep(0.1)
            if not group_alive(pgid):
                break
        child = self._children.pop(entry["id"], None)
        if child is not None:
            child.wait()

    def resources(self) -> list[Pool]:
        cpus = float(len(os.sched_getaffinity(0)))
        memory = memory_bytes()
        gpus = len(glob.glob("/dev/nvidia[0-9]*"))
        return [Pool(self.name, socket.gethostname(), cpus, max(0.0, round(cpus - os.getloadavg()[0], 2)),
                     memory["total"] or 0, memory["available"] or 0, gpus, gpus,
                     note="free CPUs: cores less the 1-minute load average")]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (zombies count as gone)."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
