"""Child processes and loopback ports: the one home of the helpers that start, track and stop processes,
used by the local runner, the local Prometheus and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from fpgaflow.errors import StageError


class Launched(Protocol):
    """What the runner follows of a command it started: a subprocess.Popen, or a batch job that acts like one
    (a Slurm job: ``fpgaflow_manager.executors.slurm``); ``wait`` raises subprocess.TimeoutExpired as Popen's."""

    returncode: int | None

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


# (command, log file, environment) -> the started command; the runner's stages go through one when its
# settings name one (RunSettings.stage_launcher), else they are local subprocesses
Launcher = Callable[[list[str], Path, dict[str, str]], Launched]


def interrupt_on_sigterm() -> None:
    """Make a SIGTERM (a cancel from `fpgaflow server`, a batch system's time limit) stop this process as
    Ctrl-C does: KeyboardInterrupt, so the runner stops every process it started. Main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Processes:
    """Every child the runner started, so that all of them can be stopped, whatever happens."""

    def __init__(self):
        self._procs: list[Launched] = []
        self._lock = threading.Lock()
        self.cancelled = threading.Event()

    def start(self, cmd: list[str], log: Path, launcher: Launcher | None = None) -> Launched:
        """Start ``cmd`` with its output appended to ``log``: a local subprocess, or through ``launcher``."""
        if self.cancelled.is_set():
            raise StageError("the run was cancelled")
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        proc: Launched
        if launcher is not None:
            proc = launcher(cmd, log, env)
        else:
            with log.open("ab") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        with self._lock:
            self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: Launched, grace: float = 15.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        self.cancelled.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            self.stop(proc, grace=10.0)
