"""fpgaflow server's Slurm executor on the real single-node cluster (tests/batch/slurm.py): the server and its
client as in tests/service/test_manager.py, started with ``--slurm --executor slurm`` and the cluster's
SLURM_CONF; the tiny train.command experiments of that module, their train stage a Slurm job."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from fpgaflow_manager.executors.local import group_alive
from fpgaflow_manager.executors.slurm import (
    JobRequest,
    JobState,
    SlurmSettings,
    accounted_state,
    batch_script,
    exit_status,
    never_starts,
    partition_pools,
)
from tests.conftest import fpgaflow
from tests.service.test_manager import Server, manifest, wait_for

pytestmark = pytest.mark.slurm


def processes_naming(text: str) -> list[str]:
    """Live processes whose command line contains ``text`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode() if entry.name.isdigit() else ""
        except OSError:
            continue  # ended meanwhile
        if text in cmd:
            found.append(f"{entry.name}: {cmd}")
    return found


def queued_jobs(slurm) -> list[str]:
    """Job names squeue lists (pending, running, completing)."""
    return slurm.run("squeue", "-h", "-o", "%j").stdout.split()


def stop_all(srv: Server, slurm, tmp_path: Path) -> None:
    """The server and its drivers (Server.stop), then any job of the cluster, and wait until no process of
    the test is left: its server, drivers and stage commands all name tmp_path."""
    srv.stop()
    slurm.run("scancel", "--user=root", check=False)
    wait_for(lambda: not queued_jobs(slurm), timeout=30, what="an empty Slurm queue")
    wait_for(lambda: not processes_naming(str(tmp_path)), timeout=15, what="no process of the test left")


@pytest.fixture
def slurm_server(slurm, tmp_path):
    servers: list[Server] = []

    def make(epoch_seconds: float = 0.2) -> Server:
        servers.append(Server(tmp_path, "--slurm", "--executor", "slurm", "--slurm-cpus", "1",
                              epoch_seconds=epoch_seconds, env=slurm.env))
        return servers[-1]

    yield make
    for srv in servers:
        stop_all(srv, slurm, tmp_path)


def job_id_of(run_log: str, name: str) -> str:
    found = re.findall(rf"slurm job (\d+) \({name}\) submitted", run_log)
    assert found, f"no job {name} in the run log:\n{run_log}"
    return found[0]


def test_an_experiment_runs_its_train_stage_as_a_slurm_job(slurm_server, slurm, tmp_path):
    srv = slurm_server()
    with srv.client() as client:
        entry = client.submit(manifest(tmp_path, "one", epochs=2))
        assert entry["executor"] == "slurm"
        assert list(client.watch("one"))[-1]["entry"]["state"] == "Succeeded"
        run_log = b"".join(client.logs("one")).decode()
        pools = [p for p in client.resources()["pools"] if p["executor"] == "slurm"]
    job_id = job_id_of(run_log, "fpgaflow-one-t00-train")
    assert f"slurm job {job_id} (fpgaflow-one-t00-train) ended: COMPLETED" in run_log
    assert slurm.job(job_id)["JobState"] == "COMPLETED"
    assert re.search(rf"JobId={job_id} .*Name=fpgaflow-one-t00-train JobState=COMPLETED", slurm.jobcomp_log.read_text())
    assert "train.py" in (srv.home / "experiments/one/t00/train/log.txt").read_text()
    assert srv.runs_started() == ["one start 0"]
    [row] = csv.DictReader(io.StringIO(fpgaflow("export", "--csv", "--home", str(srv.home)).stdout))
    assert (row["experiment"], row["trial"], row["phase"]) == ("one", "t00", "Succeeded")
    cpus = int(slurm.run("sinfo", "-h", "-o", "%C").stdout.strip().split("/")[3])
    assert [(p["name"], p["cpus"]) for p in pools] == [(slurm.partition, cpus)] and "runs go here" in pools[0]["note"]
    shown = fpgaflow("resources", "--home", str(srv.home)).stdout
    assert re.search(rf"slurm\s+│\s+{slurm.partition}\s+│\s+[\d.]+ of {cpus}\s", shown), shown
    stop_all(srv, slurm, tmp_path)


def test_cancel_leaves_no_slurm_job_and_no_driver(slurm_server, slurm, tmp_path):
    srv = slurm_server(epoch_seconds=1.0)
    with srv.client() as client:
        client.submit(manifest(tmp_path, "long", epochs=60))
        wait_for(lambda: "long start 0" in srv.runs_started()
                 and "(fpgaflow-long-t00-train): RUNNING" in b"".join(client.logs("long")).decode(),
                 what="the training job to run, and its driver to know it")
        assert queued_jobs(slurm) == ["fpgaflow-long-t00-train"]
        pgid = client.queue(name="long")["entries"][0]["handle"]["pgid"]
        assert client.cancel("long")["state"] == "Cancelled"
        assert not group_alive(pgid), "the driver's process group is gone"
        run_log = b"".join(client.logs("long")).decode()
    wait_for(lambda: not queued_jobs(slurm), timeout=20, what="the train job to leave the Slurm queue")
    job_id = job_id_of(run_log, "fpgaflow-long-t00-train")
    assert slurm.job(job_id)["JobState"] in ("CANCELLED", "FAILED")
    assert "interrupted" in run_log
    stop_all(srv, slurm, tmp_path)


def test_a_job_killed_by_its_time_limit_is_submitted_again_and_resumes(slurm_server, slurm, tmp_path):
    """A zero time limit on the running train job: TIMEOUT within 30 s, mid-training (20 epochs of 2 s); the
    driver submits it again and the training goes on from its checkpoint."""
    epochs = 20
    srv = slurm_server(epoch_seconds=2.0)
    checkpoints = srv.home / "experiments/slow/t00/train/checkpoints"
    with srv.client() as client:
        client.submit(manifest(tmp_path, "slow", epochs=epochs))
        wait_for(lambda: checkpoints.exists() and any(checkpoints.iterdir()), what="a first checkpoint")
        job_id = slurm.run("squeue", "-h", "-n", "fpgaflow-slow-t00-train", "-o", "%i").stdout.strip()
        slurm.run("scontrol", "update", f"JobId={job_id}", "TimeLimit=0")
        wait_for(lambda: client.queue(name="slow", all=True)["entries"][0]["state"] != "Running", timeout=180,
                 what="the experiment to end")
        assert client.queue(name="slow", all=True)["entries"][0]["state"] == "Succeeded"
        run_log = b"".join(client.logs("slow")).decode()
    assert slurm.job(job_id)["JobState"] == "TIMEOUT"
    assert f"slurm job {job_id} (fpgaflow-slow-t00-train) ended TIMEOUT, killed by Slurm; submitting it again " \
           "(1 of 3)" in run_log
    again = re.search(rf"fpgaflow: slurm job {job_id} ended TIMEOUT, killed by Slurm; submitted again as job (\d+) ",
                      (srv.home / "experiments/slow/t00/train/log.txt").read_text())
    assert again, "the stage's log says so too"
    assert slurm.job(again.group(1))["JobState"] == "COMPLETED"
    starts = srv.runs_started()
    assert len(starts) == 2 and starts[0] == "slow start 0" and int(starts[1].split()[-1]) > 0, starts
    history = json.loads((srv.home / "experiments/slow/t00/train/history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == list(range(1, epochs + 1)), "every epoch once"
    stop_all(srv, slurm, tmp_path)


def test_a_job_its_partition_can_never_run_fails_with_slurms_reason(slurm_server, slurm, tmp_path):
    """The partition's MaxTime lowered to 1 minute, a training that asks for 10: Slurm keeps such a job pending
    for ever (PartitionTimeLimit); the driver cancels it and the experiment fails saying why."""
    slurm.run("scontrol", "update", f"PartitionName={slurm.partition}", "MaxTime=1")
    try:
        srv = slurm_server()
        with srv.client() as client:
            client.submit(manifest(tmp_path, "toolong", extra="  preconditions: {maxDuration: 10m}\n"))
            wait_for(lambda: client.queue(name="toolong", all=True)["entries"][0]["state"] != "Running"
                     and client.queue(name="toolong", all=True)["entries"][0]["state"] != "Queued", timeout=60,
                     what="the experiment to end")
            entry = client.queue(name="toolong", all=True)["entries"][0]
            run_log = b"".join(client.logs("toolong")).decode()
    finally:
        slurm.run("scontrol", "update", f"PartitionName={slurm.partition}", "MaxTime=INFINITE")
    assert entry["state"] == "Failed", entry
    assert "(fpgaflow-toolong-t00-train) can never start (PartitionTimeLimit" in run_log, run_log
    trial = json.loads(fpgaflow("show", "toolong", "--json", "--home", str(srv.home)).stdout)["trials"][0]
    assert trial["phase"] == "Failed" and "PartitionTimeLimit" in (trial["message"] or ""), trial
    assert not queued_jobs(slurm) and srv.runs_started() == []
    stop_all(srv, slurm, tmp_path)


def test_exit_codes_gpus_and_partitions_read_as_slurm_writes_them():
    """No cluster: what the executor makes of scontrol's ExitCode and sinfo's lines, and the script it writes."""
    codes = [exit_status(JobState(state, code)) for state, code in (
        ("COMPLETED", "0:0"), ("FAILED", "3:0"), ("FAILED", "0:15"), ("CANCELLED", "7:0"), ("FAILED", "0:0"),
        ("TIMEOUT", "0:9"))]
    assert codes == [0, 3, 143, 143, 1, 137]
    sinfo = ("debug*|n1|1/1/0/2|4000|1000|(null)|(null)|mixed\n"
             "gpu|n2|0/8/0/8|64000|0|gpu:a100:2(S:0-1)|gpu:a100:1(IDX:0)|idle\n"
             "gpu|n3|0/8/0/8|64000|0|gpu:2,mps:100|gpu:0,mps:0|idle\n")
    debug, gpu = partition_pools(sinfo, None)
    assert (debug.name, debug.cpus, debug.cpus_free, debug.memory_bytes, debug.memory_free_bytes) == (
        "debug", 2, 1, 4000 * 2**20, 3000 * 2**20)
    assert "runs go here" in debug.note and "runs go here" not in gpu.note
    assert (gpu.cpus, gpu.gpus, gpu.gpus_free) == (16, 4, 3)
    script = batch_script(["python", "-m", "fpgaflow", "train", "--trial-dir", "/runs/x y/t00"],
                          JobRequest("fpgaflow-x-t00-train", gpus=1, minutes=90),
                          SlurmSettings(partition="gpu", cpus=4, memory="8G"))
    assert script.splitlines() == [
        "#!/bin/bash", "#SBATCH --job-name=fpgaflow-x-t00-train", "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G", "#SBATCH --time=90", "#SBATCH --gres=gpu:1", "#SBATCH --export=ALL",
        "exec python -m fpgaflow train --trial-dir '/runs/x y/t00'"]
    # a job waiting for what its partition never gives is not left pending for ever; a busy cluster is waited for
    assert "MaxTime" in never_starts(JobState("PENDING", reason="PartitionTimeLimit"))
    assert never_starts(JobState("PENDING", reason="Resources")) is None
    assert never_starts(JobState("RUNNING", reason="PartitionTimeLimit")) is None
    # a job the controller forgot, as the accounting database keeps it
    assert accounted_state("12|CANCELLED by 0|0:15\n", "12") == JobState("CANCELLED", "0:15")
    assert accounted_state("", "12").state == "UNKNOWN"
