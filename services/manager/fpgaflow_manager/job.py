"""One attempt of a queued experiment's run:
``python -m fpgaflow_manager.job --lock L --exit-file E -- COMMAND...``.

It takes an exclusive lock on L (flock) and passes it to COMMAND, so the lock is held for as long as any of
the two lives; then it writes COMMAND's exit code to E (atomically). That is how `fpgaflow server` knows,
even after it was itself killed and started again, whether a run is still going (the lock is held), ended
(E exists) or was lost (neither: resumed). A second attempt started while the first still holds the lock
exits at once with EX_TEMPFAIL (75) and runs nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LOCKED = 75  # EX_TEMPFAIL: another attempt holds the lock


def try_lock(path: Path) -> int | None:
    """An open descriptor holding the exclusive lock on ``path``, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_locked(path: Path) -> bool:
    """Whether a run holds ``path`` now (the caller takes the lock for a moment and gives it back)."""
    if not path.exists():
        return False
    fd = try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def write_exit(path: Path, code: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"code": code, "finished": time.time()}))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpgaflow_manager.job", description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--exit-file", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    fd = try_lock(args.lock)
    if fd is None:
        print(f"another attempt of this run holds {args.lock}; nothing started", file=sys.stderr)
        return LOCKED
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    # SIGTERM and SIGINT reach the whole process group (a cancel): the command stops itself; this wrapper
    # waits for it and records how it ended (a handler, not SIG_IGN, which the command would inherit)
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    proc = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL)
    code = proc.wait()
    write_exit(args.exit_file, code)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
