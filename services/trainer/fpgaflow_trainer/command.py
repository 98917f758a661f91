"""``train.command``: a user's program (PyTorch, JAX, plain Python) run as the train stage.

The program reports through :mod:`fpgaflow.tracking` into the stage folder; its environment has
``FPGAFLOW_TRAIN_DIR`` (the stage folder), ``FPGAFLOW_SPEC`` (the trial's spec.json),
``FPGAFLOW_TRIAL_DIR`` and ``FPGAFLOW_TRACKING_PY`` (the path of tracking.py, for a Python without
fpgaflow installed, which can copy or load that one standard-library file). An argv starting with
``python`` or ``python3`` runs under the interpreter running fpgaflow, where ``fpgaflow.tracking`` imports.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from fpgaflow import tracking
from fpgaflow.errors import Diverged, StageError
from fpgaflow.trial import TrialDir

STDERR_LINES = 20  # lines of the program's stderr an error message quotes


def command_env(trial_root: Path, out: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the program runs with."""
    env = dict(os.environ if base is None else base)
    env.update({
        tracking.ENV_TRAIN_DIR: str(out.resolve()),
        tracking.ENV_SPEC: str((trial_root / "spec.json").resolve()),
        tracking.ENV_TRIAL_DIR: str(trial_root.resolve()),
        tracking.ENV_TRACKING_PY: str(Path(tracking.__file__).resolve()),
        "PYTHONUNBUFFERED": "1",  # progress lines arrive as they are printed
    })
    return env


def resolve_argv(argv: list[str]) -> list[str]:
    """``python``/``python3`` as the program name means this interpreter."""
    if not argv:
        raise StageError("train.command is empty")
    return [sys.executable, *argv[1:]] if argv[0] in ("python", "python3") else list(argv)


def _pump(source: IO[str], sink: IO[str], keep: collections.deque | None) -> None:
    for line in source:
        sink.write(line)
        sink.flush()
        if keep is not None:
            keep.append(line.rstrip("\n"))


def stream(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, list[str]]:
    """Run ``argv``, copying its stdout and stderr to ours as they come; the exit code and stderr's last lines."""
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1)
    except OSError as exc:
        raise StageError(f"train.command {argv[0]!r} could not start: {exc}") from None
    tail: collections.deque = collections.deque(maxlen=STDERR_LINES)
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, None), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, tail), daemon=True)]
    for t in pumps:
        t.start()
    try:
        code = proc.wait()
    except BaseException:  # interrupted: do not leave the program running
        proc.kill()
        proc.wait()
        raise
    for t in pumps:
        t.join()
    return code, list(tail)


def read_outcome(out: Path) -> dict | None:
    path = out / tracking.OUTCOME
    return json.loads(path.read_text()) if path.exists() else None


def read_history(out: Path) -> dict:
    """history.json of the stage folder, checked with :func:`fpgaflow.tracking.validate_history`."""
    path = out / tracking.HISTORY
    if not path.exists():
        raise StageError(f"train.command wrote no {path}: report epochs with fpgaflow.tracking's Run.log_epoch")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise StageError(f"{path} is not valid JSON: {exc}") from None
    problems = tracking.validate_history(doc)
    if problems:
        raise StageError(f"{path} is invalid: " + "; ".join(problems))
    return doc


def stage_result(argv: list[str], code: int, stderr_tail: list[str], outcome: dict | None, history: dict | None) -> dict:
    """The stage result from what the program left, or the StageError (Diverged) that says why it failed."""
    said = "\n".join(stderr_tail)
    if outcome is not None and outcome.get("status") == "Failed":
        reason, message = outcome.get("reason", StageError.reason), outcome.get("message", "")
        if code != 0:
            message += f" (exit code {code})"
        raise Diverged(message) if reason == Diverged.reason else StageError(message, reason=reason)
    if code != 0:
        raise StageError(f"train.command {' '.join(argv)} exited with code {code}" + (f"; its stderr ends:\n{said}" if said else ""))
    if history is None:
        raise StageError("train.command left no history")
    if outcome is None or outcome.get("status") != "Succeeded":
        raise StageError("train.command exited 0 without calling fpgaflow.tracking's Run.finish(...) with its results")
    return {**outcome.get("results", {}), "epochs": len(history["epochs"]), "command": list(argv)}


def run_command(trial: TrialDir, out: Path, argv: list[str], cwd: Path | None = None) -> dict:
    """Run ``argv`` as the train stage in ``out``; returns the program's results plus ``epochs``."""
    resolved = resolve_argv(argv)
    out.mkdir(parents=True, exist_ok=True)
    (out / tracking.OUTCOME).unlink(missing_ok=True)  # an earlier attempt's outcome must not count
    print(f"train: running {' '.join(argv)}", flush=True)
    code, tail = stream(resolved, command_env(trial.root, out), cwd)
    outcome = read_outcome(out)
    failed = (outcome or {}).get("status") == "Failed" or code != 0
    history = None if failed else read_history(out)
    return stage_result(argv, code, tail, outcome, history)
