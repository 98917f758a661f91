"""Where `fpgaflow server` runs an experiment. Every executor does the same five things to a queue entry, each
in its own way: start it, tell whether it still runs (or ended, or was lost), cancel it, name its log, and
report the resources it has free.

An entry's folder (``RunStore.queue_dir``) holds what the manager wrote before the start (``manifest.json``,
``git.json``) and what the executor keeps (``run.log``, its lock and exit files).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

RUNNING: Final = "running"
FINISHED: Final = "finished"
LOST: Final = "lost"


@dataclass(frozen=True)
class Status:
    state: Literal["running", "finished", "lost"]
    code: int | None = None  # the run's exit code, when it finished
    message: str = ""


@dataclass(frozen=True)
class Pool:
    """What one place an executor runs on has, and has free now."""

    executor: str
    name: str
    cpus: float
    cpus_free: float
    memory_bytes: int
    memory_free_bytes: int
    gpus: int = 0
    gpus_free: int = 0
    note: str = ""


class Executor(Protocol):
    name: str

    def unavailable(self) -> str | None:
        """None when it can start runs now, else why not."""

    def start(self, entry: dict, folder: Path) -> dict:
        """Start the entry's run (attempt ``entry['attempt']``); returns its handle, kept in the queue."""

    def poll(self, entry: dict, folder: Path) -> Status: ...

    def cancel(self, entry: dict, folder: Path) -> None: ...

    def log_path(self, entry: dict, folder: Path) -> Path: ...

    def resources(self) -> list[Pool]: ...


def run_command(manifest: Path, home: Path, *, replace: bool, git_file: Path, live_metrics: bool,
                python: str = sys.executable) -> list[str]:
    """The command of one experiment's run: `fpgaflow run`, on the entry's manifest and the server's run store
    (a run started again resumes: finished stages are skipped, training goes on from its checkpoint)."""
    cmd = [python, "-m", "fpgaflow", "run", str(manifest), "--home", str(home), "--git-info", str(git_file)]
    if replace:
        cmd.append("--replace")
    if not live_metrics:
        cmd.append("--no-prometheus")
    return cmd
