"""The local run store: an SQLite index of experiments and trials beside their artifact folders.

```
<home>/index.sqlite
<home>/experiments/<name>/experiment.json, report.md, <trial>/...
```
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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
"""

TRIAL_COLUMNS = ("phase", "stage", "reason", "message", "accuracy_float", "accuracy_emulated", "argmax_agreement", "results")


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

    def _write(self, sql: str, args: tuple) -> None:
        with self._connect() as conn:
            conn.execute(sql, args)

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


def _trial(row: sqlite3.Row) -> dict:
    doc = dict(row)
    doc["parameters"] = json.loads(doc["parameters"])
    doc["results"] = json.loads(doc["results"]) if doc["results"] else None
    return doc
