"""A real single-node Slurm cluster for the batch tests: munged, slurmctld and slurmd from Debian's packages
(``apt-get install --no-install-recommends slurmctld slurmd slurm-client munge``: Slurm 22.05.8, munge 0.5.15),
run as root in the foreground as children of the test process (no systemd, nothing in /etc), every file of
theirs under one folder. ``start()`` takes about 1.5 s, a job runs 1-2 s after sbatch, ``stop()`` under a second
and leaves no process running (an exited slurmstepd may show in ps as ``<defunct>`` until PID 1 reaps it:
slurmd double-forks its step daemons, so they are nobody else's children).

The node is this machine: NodeName its short host name, NodeAddr 127.0.0.1, the CPUs, sockets and RealMemory
that ``slurmd -C`` detects (configuring more would get the node drained), in one partition, ``debug``.
Plugins that need no cgroup hierarchy: proctrack/linuxproc (a job's processes are found by parentage, so
cancelling a job kills its children too), task/none, jobacct_gather/none, switch/none; select/cons_tres with
CR_Core_Memory and DefMemPerCPU=512, so jobs share the node and AllocMem is counted (nothing enforces memory).
The clients (sbatch, squeue, scontrol, scancel, sinfo) need only ``SLURM_CONF`` (see ``env``): munged's socket
reaches them and the daemons through ``AuthInfo=socket=...`` in slurm.conf.

Final states without slurmdbd (``sacct`` only says "Slurm accounting storage is disabled"):

* ``scontrol show job -o ID`` (``job()``) keeps a finished job for MinJobAge, a day here (Slurm's default is
  300 s, so an executor on a real cluster needs sacct once that has passed): ``JobState=COMPLETED``,
  ``FAILED`` with ``Reason=NonZeroExitCode ExitCode=3:0`` (exit status:signal), ``CANCELLED`` (``ExitCode=0:15``),
  ``TIMEOUT`` (``Reason=TimeLimit``), ``NODE_FAIL`` (``Reason=NodeDown``, a job submitted with --no-requeue).
  ``squeue -h -t all -j ID -o %T`` shows the same state (squeue has no exit code field in 22.05).
* ``JobCompType=jobcomp/filetxt`` appends one line per ended job (and per requeue) to ``jobcomp_log``:
  ``JobId=7 ... JobState=FAILED ... ExitCode=3:0``. It outlives the job record; a requeue by node failure or
  preemption is logged as ``NODE_FAIL``/``PREEMPTED`` while the job itself goes back to PENDING.

Making Slurm act (times measured on a busy 2-core sandbox):

* Time limit: limits are whole minutes (``--time=0:05`` becomes 1 minute) and slurmctld tests them every 30 s
  (PERIODIC_TIMEOUT, a constant; no slurm.conf option shortens it), so ``--time=1`` ends in TIMEOUT 60-90 s
  after the start. Faster: ``scontrol update JobId=ID TimeLimit=0`` on a RUNNING job (0 means zero minutes
  there, unlike sbatch's --time=0 which means no limit) makes it overdue at once: TIMEOUT within 30 s (+ KillWait=1).
* ``scontrol requeue ID``: a running job is killed and goes COMPLETING then PENDING (``Reason=BeginTime``,
  ``Restarts=1``, ``$SLURM_RESTART_COUNT`` 1 in the job); it may start again after the credential lifetime,
  ``cred_expire`` in AuthInfo, 120 s by default and 5 s here (runs again after ~6 s). Its output file is
  truncated unless it was submitted with --open-mode=append. ``scontrol requeuehold ID`` keeps it PENDING
  (``Reason=job_requeued_in_held_state``) until ``scontrol release ID``.
* Node failure: ``scontrol update NodeName=HOST State=DOWN Reason=...`` kills the node's jobs: NODE_FAIL for
  --no-requeue jobs, requeued (PENDING, Restarts=1) for the others; ReturnToService=2 brings the node back
  (idle) as soon as slurmd answers, about at once.
* Preemption is not configured. Adding ``PreemptType=preempt/partition_prio``, ``PreemptMode=REQUEUE`` (or
  CANCEL) and a second partition on the node with a higher PriorityTier makes a job there preempt ``debug``
  jobs: logged as PREEMPTED and requeued (or left PREEMPTED with CANCEL).

GPUs: there are none. ``sbatch --gres=gpu:1`` (or ``--gpus=1``) exits 1 with ``sbatch: error: Invalid generic
resource (gres) specification`` (no GresTypes here); with ``GresTypes=gpu`` and a GPU-less node it says
``sbatch: error: Batch job submission failed: Requested node configuration is not available``, as for
``--mem`` beyond RealMemory. More CPUs than the partition has (``-c 8``) is accepted and stays PENDING
(``Reason=PartitionConfig``) for ever.

Resources per partition: ``sinfo -h -O 'Partition:|,CPUsState:|,Memory:|,AllocMem:|,Gres:|,GresUsed:|,StateLong:'``
gives ``debug*|1/1/0/2|24105|1000|(null)|(null)|mixed`` (CPUs allocated/idle/other/total, RealMemory MB,
allocated MB, GPUs configured and used; ``*`` marks the default partition; add ``-N`` and ``NodeHost:|`` for one
line per node). ``scontrol show node -o`` has the same as CPUAlloc, CPUTot, RealMemory, AllocMem, Gres; its
FreeMem (sinfo's %e) is the operating system's free memory, not what Slurm has left to allocate.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fpgaflow.processes import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
MARKER = "FPGAFLOW_TEST_SLURM"  # in the environment of each daemon (and job) of one cluster: how stop() finds them
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"  # Debian puts the daemons in /usr/sbin


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this machine lacks."""
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=SEARCH_PATH) is None]


def _which(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} is missing: apt-get install slurmctld slurmd slurm-client munge")
    return found


def node_hardware() -> dict[str, str]:
    """What slurmd itself detects (``slurmd -C``): NodeName, CPUs, Boards, SocketsPerBoard, CoresPerSocket,
    ThreadsPerCore, RealMemory."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))


@dataclass
class SlurmCluster:
    workdir: Path
    partition: str = "debug"
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.host = socket.gethostname().split(".")[0]  # slurmctld runs only on the host SlurmctldHost names

    @property
    def conf(self) -> Path:
        return self.workdir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.workdir / "munge" / "munge.socket"

    @property
    def jobcomp_log(self) -> Path:
        return self.workdir / "jobcomp.log"

    @property
    def env(self) -> dict[str, str]:
        """The environment for the client tools: os.environ plus SLURM_CONF, and the marker, which sbatch's
        default --export=ALL hands on to the jobs."""
        return {**os.environ, "SLURM_CONF": str(self.conf), MARKER: str(self.workdir)}

    def write_conf(self) -> Path:
        hw = node_hardware()
        node = " ".join(f"{key}={hw[key]}" for key in
                        ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"))
        w = self.workdir
        for sub in ("state", "spool", "log"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=fpgaflow-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/slurmctld.pid
SlurmdPidFile={w}/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp_log}
MinJobAge=86400
KillWait=1
OverTimeLimit=0
ReturnToService=2
NodeName={self.host} NodeHostname={self.host} NodeAddr=127.0.0.1 {node} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        return self.conf

    def _spawn(self, name: str, cmd: list[str]) -> None:
        # The daemons write their own logs under log/; this file catches what they print before that.
        with (self.workdir / "log" / f"{name}.out").open("ab") as out:
            self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=self.env, start_new_session=True)

    def start(self, timeout: float = 60) -> SlurmCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_conf()
        munge = self.munge_socket.parent
        munge.mkdir(mode=0o755, exist_ok=True)
        key = munge / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        try:
            # --force: munged wants every folder above its socket open to all, and a pytest tmp dir is 0700.
            self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--key-file={key}",
                                   f"--socket={self.munge_socket}", f"--pid-file={munge}/munged.pid",
                                   f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"])
            self._wait(self.munge_socket.exists, timeout, "munged socket")
            # -D: stay in the foreground; -i: ignore (absent) state of an earlier run.
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
            self._wait(self._node_idle, timeout, f"idle node {self.host} in sinfo")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-N", "-o", "%t", check=False)
        return done.returncode == 0 and set(done.stdout.split()) == {"idle"}

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.workdir / 'log'}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"no {what} after {timeout:.0f} s; see {self.workdir / 'log'}")

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """One client command against this cluster."""
        done = subprocess.run([_which(tool), *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o``'s fields, e.g. JobState, ExitCode ("3:0"), Reason, Restarts, StdOut."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", "-o", job_id).stdout))

    def wait_state(self, job_id: str, states: set[str], timeout: float = 30) -> dict[str, str]:
        """The job's fields once its JobState is one of ``states``."""
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["JobState"] not in states:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['JobState']} after {timeout:.0f} s, not in {states}")
            time.sleep(0.2)
        return job

    def stop(self, grace: float = 15) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged, then SIGKILL whatever is left of this cluster:
        processes with its marker in their environment (slurmstepd, jobs) and their descendants."""
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            self.run("scancel", "--full", "--user=root", check=False, timeout=20)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.run("squeue", "-h", check=False, timeout=20).stdout.strip():
                time.sleep(0.3)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def leftovers(self) -> list[int]:
        """Processes still running with this cluster's marker in their environment, and their descendants."""
        marker = f"{MARKER}={self.workdir}".encode()
        parent: dict[int, int] = {}
        found: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.add(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
        grew = True
        while grew:
            descendants = {pid for pid, ppid in parent.items() if ppid in found} - found
            found |= descendants
            grew = bool(descendants)
        return sorted(found)
