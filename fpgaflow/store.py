"""The local run store: an SQLite index of experiments and trials beside their artifact folders, and the
queue of `fpgaflow server` (each submission, its state and its executor's handle).

```
<home>/index.sqlite
<home>/experiments/<name>/experiment.json, report.md, <trial>/...
<home>/queue/<id>/manifest.json, run.log, ... (what `fpgaflow server`'s executors keep of a submission)
```
A write that finds the file system full fails with StoreFull and leaves the index as it was (SQLite rolls the
transaction back).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from fpgaflow.errors import AlreadyQueued, StoreFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    manifest TEXT NOT NULL,
    folder TEXT NOT NULL,
    git_commit TEXT,
    git_dirty INTEGER,
    phase TEXT NOT NULL,
    reason TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    experiment TEXT NOT NULL REFERENCES experiments(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    parameters TEXT NOT NULL,
    phase TEXT NOT NULL,
    stage TEXT,
    reason TEXT,
    message TEXT,
    accuracy_float REAL,
    accuracy_emulated REAL,
    argmax_agreement REAL,
    results TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (experiment, name)
);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    source TEXT,
    git TEXT,
    executor TEXT NOT NULL,
    priority INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    trials INTEGER NOT NULL,
    replace_results INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    handle TEXT,
    reason TEXT,
    message TEXT,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_one_active_per_name ON queue(name) WHERE state IN ('Queued', 'Running');
"""

TRIAL_COLUMNS = ("phase", "stage", "reason", "message", "accuracy_float", "accuracy_emulated", "argmax_agreement", "results")
QUEUE_COLUMNS = ("state", "attempt", "handle", "reason", "message", "started", "finished", "executor")
ACTIVE = ("Queued", "Running")  # a queue entry's states before it ends (Succeeded, Failed, Cancelled)


def _full(exc: BaseException) -> bool:
    """Whether a write failed for want of space (SQLITE_FULL, ENOSPC, EDQUOT)."""
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc).lower()
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class RunStore:
    home: Path

    @property
    def db_path(self) -> Path:
        return self.home / "index.sqlite"

    def experiment_dir(self, name: str) -> Path:
        return self.home / "experiments" / name

    def _connect(self) -> sqlite3.Connection:
        self.home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(SCHEMA)
        return conn

    def _write(self, sql: str, args: tuple) -> sqlite3.Cursor:
        try:
            with self._connect() as conn:
                return conn.execute(sql, args)
        except (sqlite3.OperationalError, OSError) as exc:
            if _full(exc):
                raise StoreFull(f"the run store's file system is full ({self.home}): {exc}") from exc
            raise

    def queue_dir(self, entry_id: int) -> Path:
        return self.home / "queue" / str(entry_id)

    # ------------------------------------------------------------------ the queue of `fpgaflow server`
    def enqueue(self, *, name: str, manifest: dict, source: str, git: dict, executor: str, priority: int,
                slots: int, trials: int, replace: bool = False) -> dict:
        """Add a submission in state Queued; AlreadyQueued when one of that name is queued or running."""
        try:
            cursor = self._write(
                """INSERT INTO queue (name, manifest, source, git, executor, priority, slots, trials, replace_results,
                                      state, submitted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'Queued', ?)""",
                (name, json.dumps(manifest), source, json.dumps(git), executor, priority, slots, trials, int(replace),
                 time.time()))
        except sqlite3.IntegrityError:
            raise AlreadyQueued(f"experiment {name!r} is already queued or running; cancel it first "
                                "(fpgaflow cancel) or give the new one another metadata.name") from None
        entry = self.queue_entry(int(cursor.lastrowid or 0))
        assert entry is not None
        return entry

    def update_queue(self, entry_id: int, **fields) -> None:
        unknown = set(fields) - set(QUEUE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown queue columns {sorted(unknown)}")
        if "handle" in fields:
            fields["handle"] = json.dumps(fields["handle"])
        self._write(f"UPDATE queue SET {', '.join(f'{c}=?' for c in fields)} WHERE id=?", (*fields.values(), entry_id))

    def queue_entries(self, *, active: bool = False, name: str | None = None) -> list[dict]:
        """Submissions in submission order: every one, or only the queued and running ones, or one name's."""
        if not self.db_path.exists():
            return []
        where: list[str] = []
        args: list[str] = []
        if active:
            where.append(f"state IN ({', '.join('?' for _ in ACTIVE)})")
            args += ACTIVE
        if name is not None:
            where.append("name=?")
            args.append(name)
        sql = "SELECT * FROM queue" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        with self._connect() as conn:
            return [_queue_entry(r) for r in conn.execute(sql, args).fetchall()]

    def queue_entry(self, entry_id: int) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM queue WHERE id=?", (entry_id,)).fetchone()
        return _queue_entry(row) if row else None

    def upsert_experiment(self, name: str, spec_hash: str, manifest: dict, git: dict, phase: str) -> None:
        now = time.time()
        self._write(
            """INSERT INTO experiments (name, spec_hash, manifest, folder, git_commit, git_dirty, phase, created, updated)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET spec_hash=excluded.spec_hash, manifest=excluded.manifest,
                 git_commit=excluded.git_commit, git_dirty=excluded.git_dirty, phase=excluded.phase, reason=NULL,
                 updated=excluded.updated""",
            (name, spec_hash, json.dumps(manifest), str(self.experiment_dir(name)), git.get("commit"),
             int(bool(git.get("dirty"))) if git.get("commit") else None, phase, now, now),
        )

    def set_experiment_phase(self, name: str, phase: str, reason: str | None = None) -> None:
        self._write("UPDATE experiments SET phase=?, reason=?, updated=? WHERE name=?", (phase, reason, time.time(), name))

    def update_trial(self, experiment: str, name: str, parameters: dict, **fields) -> None:
        unknown = set(fields) - set(TRIAL_COLUMNS)
        if unknown:
            raise ValueError(f"unknown trial columns {sorted(unknown)}")
        if "results" in fields:
            fields["results"] = json.dumps(fields["results"])
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{c}=excluded.{c}" for c in fields)
        self._write(
            f"""INSERT INTO trials (experiment, name, parameters, updated{', ' + cols if cols else ''})
                VALUES (?, ?, ?, ?{', ' + marks if marks else ''})
                ON CONFLICT(experiment, name) DO UPDATE SET parameters=excluded.parameters, updated=excluded.updated
                {', ' + updates if updates else ''}""",
            (experiment, name, json.dumps(parameters), time.time(), *fields.values()),
        )

    def experiments(self) -> list[dict]:
        if not self.db_path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                """SELECT e.*, COUNT(t.name) AS trials,
                          SUM(t.phase = 'Succeeded') AS succeeded, MAX(t.accuracy_emulated) AS best_emulated
                   FROM experiments e LEFT JOIN trials t ON t.experiment = e.name
                   GROUP BY e.name ORDER BY e.updated DESC"""
            ).fetchall()
        return [dict(r) for r in rows]

    def experiment(self, name: str) -> dict | None:
        if not self.db_path.exists():
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM experiments WHERE name=?", (name,)).fetchone()
            if row is None:
                return None
            trials = conn.execute("SELECT * FROM trials WHERE experiment=? ORDER BY name", (name,)).fetchall()
        doc = dict(row)
        doc["manifest"] = json.loads(doc["manifest"])
        doc["trials"] = [_trial(t) for t in trials]
        return doc

    def export_csv(self) -> str:
        """Every trial of every experiment, one row each, with its experiment's git commit."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["experiment", "trial", "phase", "stage", "reason", "parameters", "accuracy_float",
                         "accuracy_emulated", "argmax_agreement", "git_commit", "git_dirty", "spec_hash", "updated"])
        if self.db_path.exists():
            with self._connect() as conn:
                rows = conn.execute(
                    """SELECT t.*, e.git_commit, e.git_dirty, e.spec_hash FROM trials t
                       JOIN experiments e ON e.name = t.experiment ORDER BY t.experiment, t.name"""
                ).fetchall()
            for r in rows:
                writer.writerow([r["experiment"], r["name"], r["phase"], r["stage"], r["reason"], r["parameters"],
                                 r["accuracy_float"], r["accuracy_emulated"], r["argmax_agreement"], r["git_commit"],
                                 r["git_dirty"], r["spec_hash"],
                                 time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r["updated"]))])
        return buf.getvalue()


def _queue_entry(row: sqlite3.Row) -> dict:
    doc = dict(row)
    for key in ("manifest", "git", "handle"):
        doc[key] = json.loads(doc[key]) if doc[key] else ({} if key != "manifest" else None)
    doc["replace_results"] = bool(doc["replace_results"])
    return doc


def _trial(row: sqlite3.Row) -> dict:
    doc = dict(row)
    doc["parameters"] = json.loads(doc["parameters"])
    doc["results"] = json.loads(doc["results"]) if doc["results"] else None
    return doc
