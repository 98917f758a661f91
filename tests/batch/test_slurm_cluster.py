"""The Slurm fixture itself: jobs reach each final state, read back without slurmdbd."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY"}


def submit(slurm, tmp_path, *args: str) -> str:
    return slurm.run("sbatch", "--parsable", f"--chdir={tmp_path}", *args).stdout.strip().split(";")[0]


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""  # ended meanwhile


def test_node_is_idle_with_this_machines_resources(slurm):
    line = slurm.run("sinfo", "-h", "-O", "Partition:|,CPUsState:|,Memory:|,AllocMem:|,Gres:|,StateLong:").stdout
    partition, cpus, memory, alloc_mem, gres, state = line.strip().split("|")
    assert partition == f"{slurm.partition}*"  # * marks the default partition
    assert cpus.split("/")[0] == "0" and int(cpus.split("/")[3]) >= 1  # allocated/idle/other/total
    assert int(memory) > 0 and alloc_mem == "0" and gres == "(null)" and state == "idle"


def test_completed_job_and_its_output(slurm, tmp_path):
    job_id = submit(slurm, tmp_path, "--output=out.txt", "--wrap", "echo hello from $SLURM_JOB_ID; echo data > file.txt")
    job = slurm.wait_state(job_id, ENDED)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0")
    assert (tmp_path / "out.txt").read_text() == f"hello from {job_id}\n"
    assert (tmp_path / "file.txt").read_text() == "data\n"
    assert f"JobId={job_id} " in slurm.jobcomp_log.read_text()


def test_failed_job_keeps_its_exit_code(slurm, tmp_path):
    job = slurm.wait_state(submit(slurm, tmp_path, "--wrap", "exit 3"), ENDED)
    assert (job["JobState"], job["ExitCode"], job["Reason"]) == ("FAILED", "3:0", "NonZeroExitCode")


def test_scancel_gives_cancelled_and_kills_the_processes(slurm, tmp_path):
    job_id = submit(slurm, tmp_path, "--wrap", "sleep 300 & sleep 301; wait")
    slurm.wait_state(job_id, {"RUNNING"})
    slurm.run("scancel", job_id)
    assert slurm.wait_state(job_id, ENDED)["JobState"] == "CANCELLED"
    deadline = time.monotonic() + 10
    while sleeps := [pid for pid in slurm.leftovers() if command(pid).startswith("sleep")]:
        assert time.monotonic() < deadline, f"the cancelled job's sleeps {sleeps} still run"
        time.sleep(0.2)


def test_time_limit_gives_timeout(slurm, tmp_path):
    """A zero time limit on a running job: overdue at once, killed at slurmctld's next 30 s time-limit test."""
    job_id = submit(slurm, tmp_path, "--time=10", "--wrap", "sleep 300")
    slurm.wait_state(job_id, {"RUNNING"})
    slurm.run("scontrol", "update", f"JobId={job_id}", "TimeLimit=0")
    job = slurm.wait_state(job_id, ENDED, timeout=45)
    assert (job["JobState"], job["Reason"]) == ("TIMEOUT", "TimeLimit")


def test_requeue_runs_the_job_again(slurm, tmp_path):
    job_id = submit(slurm, tmp_path, "--output=out.txt", "--open-mode=append", "--wrap",
                    "echo run $SLURM_RESTART_COUNT; sleep 300")
    slurm.wait_state(job_id, {"RUNNING"})
    slurm.run("scontrol", "requeue", job_id)
    job = slurm.wait_state(job_id, {"PENDING"})
    assert job["Restarts"] == "1"
    slurm.wait_state(job_id, {"RUNNING"}, timeout=30)  # after cred_expire (5 s)
    deadline = time.monotonic() + 10
    while (tmp_path / "out.txt").read_text().count("run") < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    slurm.run("scancel", job_id)
    slurm.wait_state(job_id, ENDED)


def test_gpus_are_refused_on_a_node_without_any(slurm, tmp_path):
    done = slurm.run("sbatch", f"--chdir={tmp_path}", "--gres=gpu:1", "--wrap", "true", check=False)
    assert done.returncode == 1
    assert "Invalid generic resource (gres) specification" in done.stderr
