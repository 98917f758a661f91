"""The experiment manager's logic, without gRPC: submissions validated and queued in the run store, the
scheduling loop that starts, follows, resumes and finishes runs on their executors, cancel, and what
``watch``, ``logs`` and ``resources`` read.

Nothing is lost and nothing runs twice:
- the queue is the run store's ``queue`` table, written before anything starts;
- an entry is marked Running (its attempt counted) before its executor starts it, and the executor's run
  holds a lock as long as it lives (``job``), so a server started again finds each running entry still
  running (re-attached), ended (finished), or lost (resumed: ``fpgaflow run`` skips finished stages and
  training goes on from its checkpoint), up to ``max_attempts`` starts.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fpgaflow.errors import ConfigError, FpgaflowError, NotFound, SpecError, StaleResult, StoreFull
from fpgaflow.plan import plan_trials
from fpgaflow.runner import describe_stage, last_line
from fpgaflow.spec import EXECUTORS, Experiment, read_experiment, spec_hash
from fpgaflow.store import RunStore
from fpgaflow.trial import TrialDir, write_json
from fpgaflow_manager.executors import FINISHED, LOST, Executor, Pool
from fpgaflow_manager.queue import Limits, plan, slots_in_use

FINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class ManagerSettings:
    home: Path
    limits: Limits
    default_executor: str = "local"
    allow_train_command: bool = False  # manifests with train.command run their command as the server's user
    min_free_disk: int = 64 * 2**20  # bytes free under the run store below which submissions are refused
    max_attempts: int = 3  # starts of one submission (a lost run is resumed)
    poll_seconds: float = 0.5
    executor_notes: dict[str, str] = field(default_factory=dict)  # executor: why it is not configured


class Manager:
    def __init__(self, settings: ManagerSettings, executors: dict[str, Executor]):
        if settings.default_executor not in executors:
            raise ConfigError(f"default executor {settings.default_executor!r} is not configured "
                              f"(configured: {', '.join(executors)})")
        self.settings = settings
        self.executors = executors
        self.store = RunStore(settings.home)
        self._lock = threading.RLock()  # one change of the queue at a time
        self._cancelling: set[int] = set()  # entries whose run is being stopped: not followed meanwhile
        self._wake = threading.Event()

    # ------------------------------------------------------------------ submissions
    def submit(self, text: str, source: str, *, executor: str = "", priority: int | None = None,
               replace: bool = False, git: dict | None = None) -> dict:
        """Validate a manifest and queue it. Refused, with nothing queued: a bad manifest (the fields named), an
        executor that is not configured, a train.command the server does not allow, more trial slots than the
        limits, a name that is queued or running, earlier results of another spec without ``replace``, and a
        full disk under the run store."""
        experiment = read_experiment(text, source)
        spec = experiment.spec
        chosen = executor or spec.executor.name or self.settings.default_executor
        if chosen not in EXECUTORS:
            raise SpecError([("spec.executor.name", f"unknown executor {chosen!r}; one of {', '.join(EXECUTORS)}")], source)
        if chosen not in self.executors:
            why = self.settings.executor_notes.get(chosen, "not configured on this server")
            raise ConfigError(f"{source}: executor {chosen!r} is not available here: {why} "
                              f"(available: {', '.join(self.executors)})")
        if spec.train.command is not None and not self.settings.allow_train_command:
            raise SpecError([("spec.train.command", "this server does not run manifests' own commands "
                              "(start it with --allow-train-command to let submitters run them as its user)")], source)
        trials = plan_trials(spec)
        slots = min(spec.sweep.parallel_trials if spec.sweep else 1, len(trials))
        limit = self.settings.limits.of(chosen)
        if slots > limit:
            raise SpecError([("spec.sweep.parallelTrials", f"{slots} trials at once is more than the {limit} trial "
                              f"slots of executor {chosen} on this server")], source)
        self._refuse_stale(experiment, replace)
        self._refuse_full_disk()
        manifest = experiment.model_dump(mode="json", by_alias=True, exclude={"status"})
        with self._lock:
            entry = self.store.enqueue(name=experiment.name, manifest=manifest, source=source, git=git or {},
                                       executor=chosen, priority=spec.executor.priority if priority is None else priority,
                                       slots=slots, trials=len(trials), replace=replace)
        self._wake.set()
        return self.entry(entry["id"])

    def _refuse_stale(self, experiment: Experiment, replace: bool) -> None:
        record = self.store.experiment(experiment.name)
        if record and record["spec_hash"] != spec_hash(experiment.spec) and not replace:
            raise StaleResult(f"experiment {experiment.name!r} already ran with a different spec "
                              f"({record['folder']}); rename it (metadata.name) or submit with --replace")

    def _refuse_full_disk(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.settings.home).free
        if free < self.settings.min_free_disk:
            raise StoreFull(f"the run store's file system has {free / 2**20:.0f} MiB free ({self.settings.home}), "
                            f"less than the {self.settings.min_free_disk / 2**20:.0f} MiB this server keeps: "
                            "nothing was queued")

    def cancel(self, name: str) -> dict:
        """A queued entry is dropped; a running one is stopped by its executor (which may wait for the run's
        grace period) without holding the queue: the scheduling loop leaves it alone meanwhile."""
        with self._lock:
            active = self.store.queue_entries(active=True, name=name)
            if not active:
                raise NotFound(f"no queued or running experiment named {name!r}")
            entry = active[0]
            if entry["id"] in self._cancelling:  # asked twice: the first cancel is under way
                return self.entry(entry["id"])
            running = entry["state"] == "Running"
            if running:
                self._cancelling.add(entry["id"])
            else:
                self._cancelled(entry)
        if running:
            try:
                self.executors[entry["executor"]].cancel(entry, self.store.queue_dir(entry["id"]))
            finally:
                with self._lock:
                    if self.store.experiment(name):
                        self.store.set_experiment_phase(name, "Failed", "Cancelled")
                    self._cancelled(entry)
                    self._cancelling.discard(entry["id"])
        self._wake.set()
        return self.entry(entry["id"])

    def _cancelled(self, entry: dict) -> None:
        self.store.update_queue(entry["id"], state="Cancelled", finished=time.time(), reason="Cancelled",
                                message="cancelled by `fpgaflow cancel`")

    # ------------------------------------------------------------------ what the client reads
    def entries(self, *, all: bool = False, name: str | None = None) -> list[dict]:
        """The queue, each entry with its position and why it waits; finished ones too with ``all``."""
        with self._lock:
            active = self.store.queue_entries(active=True)
            entries = self.store.queue_entries(name=name) if (all or name) else active
        waiting = self._plan(active)
        return [{**e, "position": waiting.positions.get(e["id"], 0), "waiting": waiting.waiting.get(e["id"], "")}
                for e in entries]

    def entry(self, entry_id: int) -> dict:
        record = self.store.queue_entry(entry_id)
        if record is None:
            raise NotFound(f"no queue entry {entry_id}")
        return next(e for e in self.entries(name=record["name"]) if e["id"] == entry_id)

    def latest(self, name: str) -> dict:
        entries = self.entries(name=name)
        if not entries:
            raise NotFound(f"no experiment named {name!r} was submitted to this server")
        return entries[-1]

    def snapshot(self, name: str) -> dict:
        """The latest submission of ``name`` and its trials' phase, stage and progress."""
        entry = self.latest(name)
        trials = []
        record = self.store.experiment(name) if entry["state"] != "Queued" else None
        for t in (record or {}).get("trials", []):
            progress = ""
            if t["phase"] == "Running" and t["stage"]:
                progress = describe_stage(TrialDir(Path(record["folder"]) / t["name"]), t["stage"])  # type: ignore[index]
            trials.append({"name": t["name"], "phase": t["phase"], "stage": t["stage"] or "", "progress": progress,
                           "parameters": t["parameters"], "accuracy_emulated": t["accuracy_emulated"]})
        return {"entry": entry, "trials": trials}

    def watch(self, name: str, stopped: Callable[[], bool], interval: float = 1.0) -> Iterator[dict]:
        """Snapshots of ``name`` each time one changes, until its submission ends (or ``stopped()``)."""
        last = None
        while not stopped():
            snap = self.snapshot(name)
            key = json.dumps(snap, sort_keys=True, default=str)
            if key != last:
                last = key
                yield snap
            if snap["entry"]["state"] in FINAL:
                return
            pause(interval, stopped)

    def log_path(self, name: str, trial: str = "", stage: str = "") -> Path:
        """The run log of ``name``'s latest submission, or one trial's stage log."""
        entry = self.latest(name)
        if not trial:
            if stage:
                raise NotFound("a stage's log belongs to a trial: give --trial too")
            path = self.executors[entry["executor"]].log_path(entry, self.store.queue_dir(entry["id"]))
        else:
            record = self.store.experiment(name)
            if record is None or trial not in {t["name"] for t in record["trials"]}:
                known = ", ".join(t["name"] for t in (record or {}).get("trials", [])) or "none yet"
                raise NotFound(f"experiment {name!r} has no trial {trial!r} (trials: {known})")
            path = Path(record["folder"]) / trial / (stage or "train") / "log.txt"
        if not path.exists():
            raise NotFound(f"no log yet at {path}")
        return path

    def resources(self) -> tuple[list[Pool], dict[str, int]]:
        pools: list[Pool] = []
        for name, executor in self.executors.items():
            try:
                pools += executor.resources()
            except FpgaflowError as exc:
                pools.append(Pool(name, "", 0, 0, 0, 0, note=str(exc)))
        return pools, self.slots()

    def slots(self) -> dict[str, int]:
        """Trial slots in use now, per configured executor."""
        used = slots_in_use(self.store.queue_entries(active=True))
        return {name: used.get(name, 0) for name in self.executors}

    # ------------------------------------------------------------------ the scheduling loop
    def _plan(self, active: list[dict]):
        unavailable = {name: self.settings.executor_notes.get(name, "not configured on this server")
                       for name in {e["executor"] for e in active} - set(self.executors)}
        unavailable |= {name: why for name, ex in self.executors.items() if (why := ex.unavailable())}
        return plan(active, self.settings.limits, unavailable)

    def tick(self) -> None:
        """Follow every running entry, then start what the limits admit."""
        with self._lock:
            for entry in self.store.queue_entries(active=True):
                if entry["state"] == "Running" and entry["id"] not in self._cancelling:
                    self._follow(entry)
            for entry in self._plan(self.store.queue_entries(active=True)).start:
                self._start(entry)

    def _start(self, entry: dict) -> None:
        folder = self.store.queue_dir(entry["id"])
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "manifest.json", entry["manifest"])
        write_json(folder / "git.json", entry["git"] or {})
        attempt = entry["attempt"] + 1
        started = entry["started"] or time.time()
        # Running and the attempt are recorded before the start: a server killed in between finds the run
        # (its lock held) or resumes it; it never starts one without a record
        self.store.update_queue(entry["id"], state="Running", attempt=attempt, started=started)
        entry = {**entry, "state": "Running", "attempt": attempt, "started": started}
        try:
            handle = self.executors[entry["executor"]].start(entry, folder)
        except (FpgaflowError, OSError) as exc:
            self._finish(entry, "Failed", "StartFailed", f"{entry['executor']} could not start it: {exc}")
            return
        self.store.update_queue(entry["id"], handle=handle)

    def _follow(self, entry: dict) -> None:
        executor = self.executors.get(entry["executor"])
        if executor is None:
            return  # its executor is not configured on this server now: left as it is
        folder = self.store.queue_dir(entry["id"])
        status = executor.poll(entry, folder)
        if status.state == FINISHED:
            self._finished(entry, status.code or 0, status.message)
        elif status.state == LOST:
            if entry["attempt"] < self.settings.max_attempts:
                self.store.update_queue(entry["id"], message=f"resumed: {status.message}")
                self._start({**self.store.queue_entry(entry["id"]), "state": "Queued"})  # type: ignore[dict-item]
            else:
                self._finish(entry, "Failed", "Lost", f"{status.message}; not resumed after {entry['attempt']} attempts")

    def _finished(self, entry: dict, code: int, message: str) -> None:
        record = self.store.experiment(entry["name"])
        if code == 0:
            self._finish(entry, "Succeeded", None, message or entry["message"])  # a resume stays on record
            return
        reason = (record or {}).get("reason") or "RunFailed"
        failed = [t for t in (record or {}).get("trials", []) if t["phase"] == "Failed"]
        said = "; ".join(f"{t['name']}: {t['message']}" for t in failed[:3]) or last_line(
            self.executors[entry["executor"]].log_path(entry, self.store.queue_dir(entry["id"])))
        self._finish(entry, "Failed", reason, f"exit code {code}: {said}")

    def _finish(self, entry: dict, state: str, reason: str | None, message: str | None) -> None:
        self.store.update_queue(entry["id"], state=state, reason=reason, message=message, finished=time.time())

    def run_forever(self, stop: threading.Event) -> None:
        """The scheduling loop, until ``stop`` is set; an error in one round is logged and the next goes on."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad round (a full disk, say)
                print(f"fpgaflow server: scheduling round failed: {type(exc).__name__}: {exc}", flush=True)
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()


def pause(seconds: float, stopped: Callable[[], bool], step: float = 0.1) -> None:
    """Sleep ``seconds``, or less when ``stopped()`` turns true."""
    deadline = time.monotonic() + seconds
    while not stopped() and time.monotonic() < deadline:
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))
