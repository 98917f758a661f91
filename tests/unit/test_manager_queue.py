"""The experiment manager's pure parts: the queue's order and admission under the limits, the run wrapper's lock,
and the listening rules of `fpgaflow server`."""

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import PurePosixPath

import pytest

from fpgaflow.errors import ConfigError
from fpgaflow_manager.job import LOCKED, is_locked, try_lock
from fpgaflow_manager.queue import Limits, ordered, plan
from fpgaflow_manager.server import ListenSettings


def entry(id, name=None, state="Queued", executor="local", priority=0, slots=1, submitted=None):
    return {"id": id, "name": name or f"e{id}", "state": state, "executor": executor, "priority": priority,
            "slots": slots, "submitted": submitted if submitted is not None else float(id)}


def test_higher_priority_starts_first_then_earlier_submission():
    entries = [entry(1), entry(2, priority=5), entry(3), entry(4, priority=5, submitted=0.5)]
    assert [e["id"] for e in ordered(entries)] == [4, 2, 1, 3]


def test_the_limits_admit_in_order_and_say_why_the_others_wait():
    entries = [entry(1, state="Running", slots=2), entry(2), entry(3), entry(4)]
    p = plan(entries, Limits(max_slots=3))
    assert [e["id"] for e in p.start] == [2]
    assert p.positions == {2: 1, 3: 2, 4: 3}
    assert p.waiting[3] == "waits for 1 local trial slot: 3 of 3 in use"
    assert p.waiting[4] == "behind 'e3', which waits for local trial slots"


def test_an_executor_limit_holds_its_own_entries_only():
    entries = [entry(1, state="Running"), entry(2), entry(3, executor="slurm")]
    p = plan(entries, Limits(max_slots=4, per_executor={"local": 1}))
    assert [e["id"] for e in p.start] == [3]
    assert "1 of 1 in use" in p.waiting[2]


def test_no_back_filling_a_large_experiment_is_not_starved():
    entries = [entry(1, state="Running", slots=2), entry(2, slots=3), entry(3, slots=1)]
    p = plan(entries, Limits(max_slots=4))
    assert p.start == [] and "behind 'e2'" in p.waiting[3]


def test_an_unavailable_executor_holds_nobody_else():
    entries = [entry(1, executor="slurm"), entry(2)]
    p = plan(entries, Limits(max_slots=2), unavailable={"slurm": "sinfo failed"})
    assert [e["id"] for e in p.start] == [2]
    assert p.waiting[1] == "executor slurm is unavailable: sinfo failed"


def test_a_run_holds_its_lock_and_a_second_attempt_starts_nothing(tmp_path):
    lock, exit_file = tmp_path / "run.lock", tmp_path / "exit-1.json"
    first = subprocess.Popen([sys.executable, "-m", "fpgaflow_manager.job", "--lock", str(lock), "--exit-file",
                              str(exit_file), "--", sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        deadline = time.monotonic() + 10
        while not is_locked(lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_locked(lock)
        second = subprocess.run([sys.executable, "-m", "fpgaflow_manager.job", "--lock", str(lock), "--exit-file",
                                 str(tmp_path / "exit-2.json"), "--", "touch", str(tmp_path / "ran")],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == LOCKED and "nothing started" in second.stderr
        assert not (tmp_path / "exit-2.json").exists() and not (tmp_path / "ran").exists()
    finally:
        first.wait(timeout=30)
    assert not is_locked(lock) and exit_file.read_text().startswith('{"code": 0')
    fd = try_lock(lock)
    assert fd is not None
    os.close(fd)


def test_listening_beyond_loopback_needs_a_token_or_client_certificates(tmp_path):
    ListenSettings(host="127.0.0.1").check()
    ListenSettings(host="::1").check()
    with pytest.raises(ConfigError, match="needs a token"):
        ListenSettings(host="0.0.0.0").check()
    token = tmp_path / "token"
    token.write_text("short")
    ListenSettings(host="0.0.0.0", token_file=token).check()
    with pytest.raises(ConfigError, match="too short"):
        ListenSettings(host="0.0.0.0", token_file=token).token(tmp_path)
    with pytest.raises(ConfigError, match="both a certificate"):
        ListenSettings(tls_cert=tmp_path / "c.pem").check()
    assert len(ListenSettings().token(tmp_path) or "") >= 32, "on loopback without a token file, a new one"


def test_kubernetes_quantities_and_status_rows():
    from fpgaflow_manager.executors.kubernetes import progress_lines, quantity, trial_rows

    assert quantity("2") == 2 and quantity("1500m") == 1.5 and quantity("4Gi") == 4 * 2**30
    assert quantity("128974848") == 128974848 and quantity("1k") == 1000 and quantity(None) == 0
    status = {"phase": "Running", "trials": [{"name": "t00", "parameters": {"hls.reuseFactor": "4"}, "phase": "Running",
                                              "stage": "convert", "accuracy": {"float": 0.7},
                                              "benchmark": {"cpu@1": {"p50Ms": 1.0}}}]}
    [row] = trial_rows(status)
    assert row["accuracy_float"] == 0.7 and row["accuracy_emulated"] is None and row["stage"] == "convert"
    assert row["results"] == {"accuracy": {"float": 0.7}, "benchmark": {"cpu@1": {"p50Ms": 1.0}}}
    assert progress_lines({}, status) == ["experiment Running", "t00: Running (convert)"]
    assert progress_lines(status, status) == []


def test_the_results_come_from_the_pod_that_mounts_the_artifacts_volume():
    from fpgaflow_manager.executors.kubernetes import artifacts_holder

    def pod(name, phase="Running", env=(), deleting=False):
        return {"metadata": {"name": name, **({"deletionTimestamp": "now"} if deleting else {})},
                "status": {"phase": phase},
                "spec": {"containers": [{"name": "main", "env": [{"name": k, "value": v} for k, v in env]}]}}

    operator = [("FPGAFLOW_ARTIFACTS_ROOT", "/artifacts"), ("OTHER", "x")]
    assert artifacts_holder([pod("t00-train", env=[("OTHER", "x")]), pod("fpgaflow-1", env=operator)]) == \
        ("fpgaflow-1", "main", PurePosixPath("/artifacts"))
    assert artifacts_holder([pod("old", env=operator, deleting=True), pod("new", "Pending", env=operator)]) is None


def test_a_copied_archive_replaces_the_folders_it_holds_and_nothing_escapes(tmp_path):
    from fpgaflow_manager.executors.kubernetes import unpack

    source = tmp_path / "source"
    (source / "t00" / "bench").mkdir(parents=True)
    (source / "t00" / "bench" / "result.json").write_text("{}")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname=".")
    into = tmp_path / "store" / "exp"
    (into / "t00" / "stale").mkdir(parents=True)
    (into / "status.json").write_text("{}")
    unpack(archive, into)
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*")) == \
        ["status.json", "t00", "t00/bench", "t00/bench/result.json"]

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(tarfile.TarError):
        unpack(evil, into)
    assert not (tmp_path / "store" / "outside.txt").exists() and (into / "t00" / "bench" / "result.json").exists()
    assert [p.name for p in into.iterdir() if p.name.startswith(".copy-")] == []


def test_pod_logs_land_where_a_local_run_writes_its_stage_logs():
    from fpgaflow_manager.executors.kubernetes import log_file

    base = {"fpgaflow.io/experiment": "e", "fpgaflow.io/trial": "t01"}
    assert log_file({**base, "fpgaflow.io/stage": "train"}) == "t01/train/log.txt"
    assert log_file({**base, "fpgaflow.io/target": "fpga"}) == "t01/serve/fpga/log.txt"
    assert log_file({"fpgaflow.io/experiment": "e"}) is None and log_file(base) is None
