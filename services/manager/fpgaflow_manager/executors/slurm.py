"""The Slurm executor: each run's stages are Slurm batch jobs.

A run is a DRIVER on the server's machine, started and followed as a local run is (``LocalExecutor``: its own
session under ``fpgaflow_manager.job``, its lock and exit file, its output in the entry's ``run.log``): it is
``python -m fpgaflow_manager.slurm_driver``, the local runner with a stage launcher that submits each stage
command (``fpgaflow train``, ``fpgaflow convert``, and a trial's ``fpgaflow serve-bench``) with ``sbatch`` and
follows the job (``SlurmJob``). The driver only waits: the work runs on the cluster's nodes.

Progress needs nothing of Slurm: each stage job writes into its trial folder in the run store, which must be
on a file system the nodes share with the server (history.json, the checkpoints, log.txt, result.json), and
the server's ``watch`` and ``logs`` read those files as they do for a local run. The driver prints a line into
the run log when a job is submitted, starts running and ends (its id and state).

A job Slurm killed (time limit, preemption, node failure, out of memory) is submitted again, up to
``max_resubmits`` times: the stages resume (training from its last checkpoint). A cancel stops the driver,
whose runner cancels its jobs (``scancel``); the ids of every job an entry submitted are kept in its folder
(``slurm-jobs.txt``), so that the jobs of a driver that was killed are cancelled too.

The client tools find the cluster through the server's environment (``SLURM_CONF``, or /etc/slurm), which the
driver and, through ``--export=ALL``, the jobs inherit. States are read with ``scontrol show job`` (which keeps
an ended job for MinJobAge, 300 s by default: the driver polls far more often than that), else ``squeue``, and
for a job both have forgotten (a driver that was stopped for longer), ``sacct`` where the cluster keeps
accounting. A job that waits for something it can never have (a time limit above its partition's, a constraint
no node offers) is cancelled and its stage fails with Slurm's reason, instead of waiting for ever.
"""

from __future__ import annotations

import math
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fpgaflow.errors import FpgaflowError, StageError
from fpgaflow.spec import duration_seconds
from fpgaflow.trial import TrialDir
from fpgaflow_manager.executors import Pool
from fpgaflow_manager.executors.local import LocalExecutor

# ended, and not to be run again: the exit code says how
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "REVOKED"})
# ended because Slurm killed the job, not because of what it ran: submitted again (the stage resumes)
KILLED = frozenset({"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "DEADLINE"})
GONE = "UNKNOWN"  # Slurm no longer knows the job (purged after MinJobAge): treated as a killed one
# why a pending job waits, when it waits for ever: the job asks for what its partition or account never gives
NEVER_STARTS = {
    "PartitionTimeLimit": "its time limit is above the partition's MaxTime",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionConfig": "it asks for more than the partition's nodes have (CPUs, memory, GPUs)",
    "BadConstraints": "no node has the features or resources it asks for",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
}
SIGNALLED = 128  # an exit code of 128 + N: killed by signal N, as a shell says

Say = Callable[[str], None]


class SlurmError(FpgaflowError):
    """A Slurm client tool failed, is missing or did not answer."""

    reason = "SlurmError"


@dataclass(frozen=True)
class SlurmSettings:
    """What every stage job of the server's runs asks Slurm for (``fpgaflow server --slurm-*``)."""

    partition: str | None = None  # None: the cluster's default partition
    cpus: int = 2  # --cpus-per-task of each job
    memory: str | None = None  # --mem of each job ("4G"); None: the cluster's default (DefMemPerCPU, ...)
    max_resubmits: int = 3  # submissions again of a job Slurm killed
    poll_seconds: float = 1.5  # Slurm is asked about a job at most this often


def slurm(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> str:
    """A Slurm client command's output; SlurmError, with its message, when it fails."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} is not installed (the Slurm client tools)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SlurmError(f"{' '.join(args[:2])} exited {done.returncode}: {said[-1] if said else 'no message'}")
    return done.stdout


# ---------------------------------------------------------------------------------------------- one job


@dataclass(frozen=True)
class JobState:
    state: str  # JobState: PENDING, RUNNING, COMPLETED, TIMEOUT, ... (GONE: Slurm forgot the job)
    exit_code: str = "0:0"  # ExitCode: "status:signal"
    reason: str = ""  # Reason: why it is pending (Resources, Priority, PartitionConfig, ...), or ended


def query_job(job_id: str) -> JobState:
    """The job's state and exit code: ``scontrol show job``, else ``squeue`` (which has no exit code), else
    ``sacct`` (a job purged from the controller; only where the cluster keeps accounting), else GONE."""
    try:
        fields = dict(re.findall(r"(\w+)=(\S*)", slurm("scontrol", "show", "job", "-o", job_id)))
        if "JobState" in fields:
            return JobState(fields["JobState"], fields.get("ExitCode") or "0:0", fields.get("Reason", ""))
    except SlurmError:
        pass
    try:
        states = slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").split()
    except SlurmError as exc:
        if "Invalid job id" not in str(exc):
            raise
        states = []
    if states:
        return JobState(states[0])
    try:
        return accounted_state(slurm("sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"), job_id)
    except SlurmError:  # no accounting storage ("Slurm accounting storage is disabled")
        return JobState(GONE)


def accounted_state(sacct: str, job_id: str) -> JobState:
    """The job's line of ``sacct -n -P -X -o JobID,State,ExitCode``: "12|CANCELLED by 0|0:15"; GONE if none."""
    for line in sacct.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3 and fields[0] == job_id:
            return JobState(fields[1].split()[0], fields[2] or "0:0")
    return JobState(GONE)


def never_starts(job: JobState) -> str | None:
    """Why a pending job will never start (Slurm keeps it pending for ever), or None."""
    if job.state == "PENDING" and job.reason in NEVER_STARTS:
        return f"{job.reason}: {NEVER_STARTS[job.reason]}"
    return None


def exit_status(job: JobState) -> int:
    """The exit code an ended job stands for: its command's, 128 + N when a signal N ended it, 143 (SIGTERM)
    for a cancelled job, and never 0 for a job that did not complete."""
    status, _, sig = job.exit_code.partition(":")
    code, signum = int(status or 0), int(sig or 0)
    if job.state == "COMPLETED":
        return code
    if signum:
        return SIGNALLED + signum
    if job.state == "CANCELLED":
        return SIGNALLED + signal.SIGTERM
    return code or 1


class SlurmJob:
    """One stage command as a Slurm batch job, followed as a subprocess.Popen is (fpgaflow.processes.Launched).

    A job Slurm killed is submitted again (a new job id) up to ``settings.max_resubmits`` times, unless it is
    being stopped. Slurm is asked about the job at most every ``settings.poll_seconds``; the answer between is
    the last one. Thread-safe: the runner's trial thread polls while its main thread may stop the job."""

    def __init__(self, name: str, script: Path, log: Path, env: dict[str, str], settings: SlurmSettings, say: Say,
                 jobs_file: Path | None = None, cwd: Path | None = None):
        self.name, self.script, self.log, self.env = name, script, log, env
        self.cwd = cwd or Path.cwd()
        self.settings, self.say, self.jobs_file = settings, say, jobs_file
        self.returncode: int | None = None
        self.resubmits = 0
        self.state = "PENDING"
        self._stopping = False  # a stop was asked for: a killed job is not submitted again
        self._asked = -math.inf  # when Slurm was last asked (time.monotonic)
        self._unreachable = ""  # the last error of a query, said once
        self._lock = threading.RLock()
        self.job_id = self._submit()

    def _submit(self) -> str:
        """sbatch the script (the environment given goes to the job: --export=ALL); the new job's id. The paths
        are arguments, not #SBATCH lines, which cannot quote every path."""
        job_id = slurm("sbatch", "--parsable", f"--output={self.log}", "--open-mode=append", f"--chdir={self.cwd}",
                       str(self.script), env=self.env).strip().split(";")[0]
        if self.jobs_file is not None:
            with self.jobs_file.open("a") as fh:
                fh.write(f"{job_id}\n")
        self.state, self._asked = "PENDING", time.monotonic()
        self.say(f"slurm job {job_id} ({self.name}) submitted")
        return job_id

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is not None or time.monotonic() - self._asked < self.settings.poll_seconds:
                return self.returncode
            self._asked = time.monotonic()
            try:
                job = query_job(self.job_id)
            except SlurmError as exc:  # the controller is busy or down: the job may well run on; ask again later
                if str(exc) != self._unreachable:
                    self.say(f"slurm job {self.job_id} ({self.name}): state unknown for now: {exc}")
                    self._unreachable = str(exc)
                return None
            self._unreachable = ""
            return self._follow(job)

    def _follow(self, job: JobState) -> int | None:
        if job.state != self.state:
            self.state = job.state
            if job.state not in ENDED | KILLED | {GONE}:
                why = f" ({job.reason})" if job.reason not in ("", "None") else ""
                self.say(f"slurm job {self.job_id} ({self.name}): {job.state}{why}")
        never = never_starts(job)
        if never and not self._stopping:
            return self._refused(never)
        if job.state in KILLED or job.state == GONE:
            if not self._stopping and self.resubmits < self.settings.max_resubmits:
                self._resubmit(job)
                return None
            return self._end(job)
        return self._end(job) if job.state in ENDED else None

    def _end(self, job: JobState) -> int:
        self.returncode = exit_status(job)
        self.say(f"slurm job {self.job_id} ({self.name}) ended: {job.state}, exit code {job.exit_code} "
                 f"-> {self.returncode}")
        return self.returncode

    def _refused(self, why: str) -> int:
        """Cancel a job that can never start; the stage fails with Slurm's reason (the last line of its log)."""
        self._stopping = True
        try:
            slurm("scancel", self.job_id)
        except SlurmError as exc:
            self.say(f"slurm job {self.job_id} ({self.name}): scancel failed: {exc}")
        self.say(f"slurm job {self.job_id} ({self.name}) can never start ({why}); cancelled")
        with self.log.open("a") as fh:
            fh.write(f"fpgaflow: slurm job {self.job_id} can never start: {why}; cancelled\n")
        self.returncode = 1
        return self.returncode

    def _resubmit(self, job: JobState) -> None:
        """Submit the same script again: its stage resumes from what the killed job left (its checkpoint)."""
        self.resubmits += 1
        old, times = self.job_id, f"{self.resubmits} of {self.settings.max_resubmits}"
        self.say(f"slurm job {old} ({self.name}) ended {job.state}, killed by Slurm; submitting it again ({times}) "
                 "to resume")
        try:  # a no-op on an ended job; were Slurm to requeue it, its copy would run beside the new one
            slurm("scancel", old)
        except SlurmError:
            pass
        try:
            self.job_id = self._submit()
        except SlurmError as exc:
            self.say(f"slurm job {old} ({self.name}): submitting it again failed: {exc}")
            self.returncode = 1
            return
        with self.log.open("a") as fh:
            fh.write(f"fpgaflow: slurm job {old} ended {job.state}, killed by Slurm; submitted again as job "
                     f"{self.job_id} ({times})\n")

    def send_signal(self, sig: int) -> None:
        """SIGTERM to a running job's command (``scancel --signal --full``: the batch step is the command);
        a job not running yet, or SIGKILL, is cancelled (plain ``scancel``: SIGTERM, SIGKILL after KillWait).
        Either way it is not submitted again."""
        with self._lock:
            self._stopping = True
            if self.returncode is not None:
                return
            self._asked = -math.inf  # the next poll asks Slurm
            if sig != signal.SIGKILL and self.state == "RUNNING":
                try:  # (scancel retries a signal to a pending job until it runs: hence only when running)
                    slurm("scancel", f"--signal={signal.Signals(sig).name.removeprefix('SIG')}", "--full",
                          self.job_id, timeout=10)
                    return
                except SlurmError as exc:
                    self.say(f"slurm job {self.job_id} ({self.name}): signalling it failed ({exc}); cancelling it")
            try:
                slurm("scancel", self.job_id)
            except SlurmError as exc:
                self.say(f"slurm job {self.job_id} ({self.name}): scancel failed: {exc}")

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"slurm job {self.job_id} ({self.name})", timeout or 0.0)
            time.sleep(0.2)
        return code


# ---------------------------------------------------------------------------------------------- stage launcher


@dataclass(frozen=True)
class JobRequest:
    """What one stage's job asks for beyond the settings: its name, GPUs and time limit."""

    name: str
    gpus: int = 0
    minutes: int | None = None


def job_request(cmd: list[str], gpus_here: Callable[[], bool]) -> JobRequest:
    """From the stage command (``python -m fpgaflow STAGE --trial-dir D ...``) and the trial's spec: a GPU for
    a training that requires one, and for a serve-bench with a gpu target where the partition has GPUs
    (``gpus_here()``; elsewhere its gpu server says the device is missing, as on a machine without one); the
    training's maxDuration as the train job's time limit (whole minutes, rounded up)."""
    stage = cmd[cmd.index("-m") + 2]
    td = TrialDir(Path(cmd[cmd.index("--trial-dir") + 1]))
    spec = td.spec()
    serve_gpu = stage == "serve-bench" and "gpu" in spec.serve.targets and gpus_here()
    gpus = int(spec.preconditions.gpu) if stage == "train" else int(serve_gpu)
    limit = spec.preconditions.max_duration if stage == "train" else None
    minutes = max(1, math.ceil(duration_seconds(limit) / 60)) if limit else None
    return JobRequest(f"fpgaflow-{td.experiment}-{td.root.name}-{stage}", gpus, minutes)


def batch_script(cmd: list[str], request: JobRequest, settings: SlurmSettings) -> str:
    """The job's script: its resources as #SBATCH lines (so that a resubmission asks for the same), then the
    command in place of the shell. (Its output, appended to the stage's log as a local stage's is, and its
    folder are sbatch's arguments: SlurmJob._submit.)"""
    options = [f"--job-name={request.name}"]
    if settings.partition:
        options.append(f"--partition={settings.partition}")
    options.append(f"--cpus-per-task={settings.cpus}")
    if settings.memory:
        options.append(f"--mem={settings.memory}")
    if request.minutes:
        options.append(f"--time={request.minutes}")
    if request.gpus:
        options.append(f"--gres=gpu:{request.gpus}")
    options.append("--export=ALL")
    return "#!/bin/bash\n" + "".join(f"#SBATCH {o}\n" for o in options) + f"exec {shlex.join(cmd)}\n"


def say_line(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


class SlurmLauncher:
    """The runner's stage launcher (fpgaflow.processes.Launcher): each stage command a SlurmJob, its script
    beside its log (``slurm-STAGE.sh``), run in this process's working directory."""

    def __init__(self, settings: SlurmSettings, say: Say = say_line, jobs_file: Path | None = None):
        self.settings, self.say, self.jobs_file = settings, say, jobs_file
        self._gpus: int | None = None  # GPUs of the jobs' partition, asked once

    def gpus_here(self) -> bool:
        if self._gpus is None:
            self._gpus = partition_gpus(self.settings.partition)
        return self._gpus > 0

    def __call__(self, cmd: list[str], log: Path, env: dict[str, str]) -> SlurmJob:
        log = log.resolve()
        script = log.parent / f"slurm-{cmd[cmd.index('-m') + 2]}.sh"
        try:
            request = job_request(cmd, self.gpus_here)
            script.write_text(batch_script(cmd, request, self.settings))
            return SlurmJob(request.name, script, log, env, self.settings, self.say, self.jobs_file, Path.cwd())
        except SlurmError as exc:  # refused (resources it cannot have, a partition it lacks): the stage fails
            raise StageError(f"{script.name} not submitted: {exc}", reason="SubmitFailed") from None


# ---------------------------------------------------------------------------------------------- the executor


def jobs_file(folder: Path) -> Path:
    """The ids of every job an entry's runs submitted, one a line (SlurmJob appends them)."""
    return folder / "slurm-jobs.txt"


def cancel_jobs(folder: Path) -> None:
    """scancel every job the entry submitted that may still be queued or running (those of a driver that was
    killed before it could cancel them; scancel ignores ended ones)."""
    try:
        ids = jobs_file(folder).read_text().split()
    except OSError:
        return
    if ids:
        try:
            slurm("scancel", *ids)
        except SlurmError as exc:
            print(f"fpgaflow server: cancelling Slurm jobs {', '.join(ids)} failed: {exc}", flush=True)


def driver_command(manifest: Path, home: Path, git_file: Path, jobs: Path, settings: SlurmSettings, *,
                   replace: bool, python: str = sys.executable) -> list[str]:
    cmd = [python, "-m", "fpgaflow_manager.slurm_driver", str(manifest), "--home", str(home), "--git-info",
           str(git_file), "--jobs-file", str(jobs), "--cpus", str(settings.cpus), "--max-resubmits",
           str(settings.max_resubmits)]
    if settings.partition:
        cmd += ["--partition", settings.partition]
    if settings.memory:
        cmd += ["--memory", settings.memory]
    if replace:
        cmd.append("--replace")
    return cmd


def gpu_count(gres: str) -> int:
    """GPUs in a Gres or GresUsed field: "gpu:2", "gpu:a100:2(S:0-1)", "gpu:a100:1(IDX:0),mps:0", "(null)"."""
    plain = re.sub(r"\([^)]*\)", "", gres)
    return sum(int(item.rsplit(":", 1)[1]) for item in plain.split(",")
               if item.startswith("gpu:") and item.rsplit(":", 1)[1].isdigit())


def partition_gpus(partition: str | None) -> int:
    """GPUs of the partition the jobs go to (None: the default one, which sinfo marks with *)."""
    total = 0
    for line in slurm("sinfo", "-h", "-N", "-o", "%P|%G", timeout=15).splitlines():
        name, _, gres = line.strip().partition("|")
        if name.rstrip("*") == partition or (partition is None and name.endswith("*")):
            total += gpu_count(gres)
    return total


SINFO_FIELDS = "Partition:|,NodeHost:|,CPUsState:|,Memory:|,AllocMem:|,Gres:|,GresUsed:|,StateLong:"


def partition_pools(sinfo: str, chosen: str | None) -> list[Pool]:
    """One Pool per partition from ``sinfo -N -O SINFO_FIELDS`` (a line per node and partition): CPUs from
    CPUsState (allocated/idle/other/total), memory what Slurm has not allocated (RealMemory - AllocMem, MB)."""
    nodes: dict[str, list[list[str]]] = {}
    for line in sinfo.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 8:
            nodes.setdefault(fields[0], []).append(fields)
    pools = []
    for partition, rows in nodes.items():
        name = partition.rstrip("*")
        cpus = [[int(n) for n in row[2].split("/")] for row in rows]
        memory = sum(int(row[3]) for row in rows) * 2**20
        states = sorted({row[7] for row in rows})
        default = partition.endswith("*")
        runs_here = name == chosen or (chosen is None and default)
        note = (f"{len(rows)} node(s): {', '.join(states)}" + ("; default partition" if default else "")
                + ("; runs go here" if runs_here else ""))
        pools.append(Pool("slurm", name, float(sum(c[3] for c in cpus)), float(sum(c[1] for c in cpus)), memory,
                          memory - sum(int(row[4]) for row in rows) * 2**20,
                          sum(gpu_count(row[5]) for row in rows),
                          sum(gpu_count(row[5]) - gpu_count(row[6]) for row in rows), note))
    return pools


class SlurmExecutor(LocalExecutor):
    """Runs a driver (``fpgaflow_manager.slurm_driver``) as the local executor runs `fpgaflow run`; the
    driver's stages are Slurm jobs."""

    name = "slurm"

    def __init__(self, home: Path, settings: SlurmSettings, *, grace: float = 15.0, python: str = sys.executable,
                 recheck_seconds: float = 10.0):
        super().__init__(home, live_metrics=False, grace=grace, python=python)
        self.settings = settings
        self.recheck_seconds = recheck_seconds
        self._checked = (-math.inf, "")  # (when, why unavailable): sinfo once in a while, not every round

    def command(self, entry: dict, folder: Path) -> list[str]:
        return driver_command(folder / "manifest.json", self.home, folder / "git.json", jobs_file(folder),
                              self.settings, replace=entry["replace_results"], python=self.python)

    def start(self, entry: dict, folder: Path) -> dict:
        cancel_jobs(folder)  # an earlier attempt's driver was lost: its jobs must not run beside the new ones
        return super().start(entry, folder)

    def cancel(self, entry: dict, folder: Path) -> None:
        """The driver is stopped as a local run is (its runner scancels its jobs), then whatever it left."""
        super().cancel(entry, folder)
        cancel_jobs(folder)

    def unavailable(self) -> str | None:
        when, why = self._checked
        if time.monotonic() - when >= self.recheck_seconds:
            why = self._why_unavailable() or ""
            self._checked = (time.monotonic(), why)
        return why or None

    def _why_unavailable(self) -> str | None:
        try:
            partitions = [p.rstrip("*") for p in slurm("sinfo", "-h", "-o", "%P", timeout=15).split()]
        except SlurmError as exc:
            return f"sinfo failed (is SLURM_CONF set and slurmctld up?): {exc}"
        if self.settings.partition and self.settings.partition not in partitions:
            return f"no partition {self.settings.partition!r} (partitions: {', '.join(partitions) or 'none'})"
        return None

    def resources(self) -> list[Pool]:
        return partition_pools(slurm("sinfo", "-h", "-N", "-O", SINFO_FIELDS, timeout=15), self.settings.partition)
