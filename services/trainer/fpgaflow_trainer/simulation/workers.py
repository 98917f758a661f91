"""Chunks made in parallel by worker processes: ``python -m fpgaflow_trainer.simulation.workers ROOT`` reads one
chunk recipe (JSON) a line on stdin, makes it into the cache at ROOT unless it is there, and answers a line
(``{"ok": key}`` or ``{"error": message}``). The parent gives each worker its next chunk as it answers, so the
cores stay busy whatever the chunks' times.

Plain subprocesses rather than multiprocessing: the parent may hold TensorFlow's threads (no fork), and a
spawned pool would re-import the caller's main module (a user's script without an ``if __name__ ==
"__main__"`` guard would start the simulation again in every worker).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path


class WorkerFailed(RuntimeError):
    pass


def run(root: Path, chunks: list[dict], workers: int, done: Callable[[dict], None]) -> None:
    """Make ``chunks`` into the cache at ``root`` over ``workers`` processes, calling ``done(chunk)`` (from the
    caller's thread) as each is made. The first failure stops the others and is raised; no worker outlives
    this call."""
    todo: queue.Queue = queue.Queue()
    for chunk in chunks:
        todo.put(chunk)
    finished: queue.Queue = queue.Queue()  # (chunk, None) or (None, error)
    stop = threading.Event()
    procs: list[subprocess.Popen] = []

    def drive(proc: subprocess.Popen) -> None:
        try:
            while not stop.is_set():
                try:
                    chunk = todo.get_nowait()
                except queue.Empty:
                    return
                proc.stdin.write(json.dumps(chunk) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                if not line:
                    raise WorkerFailed(f"a simulation worker exited with code {proc.wait()} (its error is above)")
                answer = json.loads(line)
                if "error" in answer:
                    raise WorkerFailed(answer["error"])
                finished.put((chunk, None))
        except (WorkerFailed, OSError, ValueError) as exc:
            finished.put((None, exc))

    try:
        for _ in range(max(1, min(workers, len(chunks)))):
            procs.append(subprocess.Popen([sys.executable, "-m", __name__, str(root)], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True))
        threads = [threading.Thread(target=drive, args=(p,), daemon=True) for p in procs]
        for t in threads:
            t.start()
        for _ in chunks:
            chunk, error = finished.get()
            if error is not None:
                raise error
            done(chunk)
    finally:
        stop.set()
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=60)  # finishes the chunk in hand (kept in the cache) and exits at end of input
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main() -> None:
    from fpgaflow_trainer.simulation.sets import ensure_chunk

    root = Path(sys.argv[1])
    for line in sys.stdin:
        chunk = json.loads(line)
        try:
            ensure_chunk(root, chunk)
            answer = {"ok": chunk["kind"]}
        except Exception as exc:  # reported to the parent, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
