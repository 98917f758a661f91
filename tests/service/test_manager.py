"""`fpgaflow server` and its client, for real: the server is a process on loopback, the client the gRPC one the
CLI uses, the experiments real `fpgaflow run`s of small manifests whose train stage is a plain-Python
``train.command`` (fpgaflow.tracking: epochs, checkpoints, resume), so that many of them run in seconds.

Each training appends "<experiment> start <epoch>" to a file, so a test can tell what ran, and how often."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fpgaflow.errors import AlreadyQueued, ServerUnavailable, SpecError, StoreFull, Unauthenticated
from fpgaflow_manager.client import Connection, ManagerClient, connection
from fpgaflow_manager.executors.local import group_alive
from tests.conftest import fpgaflow
from tests.service.test_notify import webhook  # noqa: F401 - a fixture: a loopback receiver of notifications

TRAIN_SCRIPT = '''
import os, time
from pathlib import Path
from fpgaflow import tracking

run = tracking.Run()
name = Path(os.environ["FPGAFLOW_TRAIN_DIR"]).parents[1].name
resumed = run.latest_checkpoint()
start = resumed[0] if resumed is not None else 0
with open(os.environ["FPGAFLOW_TEST_STARTS"], "a") as f:
    f.write(f"{name} start {start}\\n")
for epoch in range(start + 1, run.total_epochs + 1):
    time.sleep(float(os.environ.get("FPGAFLOW_TEST_EPOCH_SECONDS", "0.2")))
    run.log_epoch(epoch, loss=1.0 / epoch, accuracy=0.5, val_loss=1.0 / epoch, val_accuracy=0.5)
    run.save_checkpoint(epoch, b"{}", state={"step": epoch})
run.finish(accuracy=0.5)
'''


def manifest(folder: Path, name: str, epochs: int = 1, priority: int = 0, extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        apiVersion: fpgaflow.io/v1alpha1
        kind: Experiment
        metadata: {{name: {name}}}
        spec:
          train: {{epochs: {epochs}, command: [python, {folder / 'train.py'}]}}
          executor: {{priority: {priority}}}
        """) + extra)
    return path


class Server:
    """`fpgaflow server` on a free loopback port over ``home``; its runs' trainings log to ``starts``."""

    def __init__(self, folder: Path, *args: str, epoch_seconds: float = 0.2, env: dict[str, str] | None = None):
        self.folder, self.args = folder, args
        self.home = folder / "home"
        self.starts = folder / "starts.txt"
        self.env = {**os.environ, **(env or {}), "FPGAFLOW_TEST_STARTS": str(self.starts),
                    "FPGAFLOW_TEST_EPOCH_SECONDS": str(epoch_seconds)}
        (folder / "train.py").write_text(TRAIN_SCRIPT)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, port: int = 0) -> None:
        info = self.home / "server.json"
        info.unlink(missing_ok=True)
        self.log = (self.folder / "server.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "fpgaflow", "server", "--home", str(self.home), "--port",
                                      str(port), "--allow-train-command", *self.args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 60
        while not info.exists():
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]

    def client(self, **overrides) -> ManagerClient:
        conn = connection(self.home)
        return ManagerClient(Connection(**{**conn.__dict__, **overrides}))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """The server, then every run it left (runs outlive their server by design)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        db = self.home / "index.sqlite"
        if db.exists():
            with sqlite3.connect(db) as conn:
                for (handle,) in conn.execute("SELECT handle FROM queue WHERE handle IS NOT NULL"):
                    pgid = json.loads(handle).get("pgid")
                    try:
                        os.killpg(pgid, signal.SIGKILL)
                    except (ProcessLookupError, TypeError):
                        pass
        self.log.close()

    def runs_started(self) -> list[str]:
        return self.starts.read_text().splitlines() if self.starts.exists() else []


@pytest.fixture
def server(tmp_path):
    servers: list[Server] = []

    def make(*args: str, epoch_seconds: float = 0.2) -> Server:
        servers.append(Server(tmp_path, *args, epoch_seconds=epoch_seconds))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def wait_for(predicate, timeout: float = 120, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def states(client: ManagerClient) -> dict[str, str]:
    return {e["name"]: e["state"] for e in client.queue(all=True)["entries"]}


@pytest.mark.slow
def test_a_submitted_experiment_runs_is_watched_and_lands_in_the_run_store(server, tmp_path, webhook):  # noqa: F811
    srv = server()
    hook = f"  notify: {{on: [Succeeded], webhook: {{url: 'http://127.0.0.1:{webhook.server_port}/hook'}}}}\n"
    with srv.client() as client:
        entry = client.submit(manifest(tmp_path, "one", epochs=3, extra=hook))
        assert entry["name"] == "one" and entry["executor"] == "local" and entry["trials"] == 1
        snapshots = list(client.watch("one"))
        assert snapshots[-1]["entry"]["state"] == "Succeeded"
        progress = [t["progress"] for s in snapshots for t in s["trials"]]
        assert any("epoch" in p for p in progress), f"watch showed no epoch: {progress}"
        run_log = b"".join(client.logs("one")).decode()
        assert "experiment one: 1 trial(s)" in run_log
        train_log = b"".join(client.logs("one", trial="t00", stage="train")).decode()
        assert "train.py" in train_log
        resources = client.resources()
        assert resources["pools"][0]["executor"] == "local" and resources["pools"][0]["cpus"] >= 1
    listed = fpgaflow("list", "--home", str(srv.home)).stdout
    assert "one" in listed and "Succeeded" in listed
    exported = fpgaflow("export", "--csv", "--home", str(srv.home)).stdout
    assert exported.splitlines()[1].startswith("one,t00,Succeeded")
    assert srv.runs_started() == ["one start 0"]
    [sent] = webhook.received  # the notification the spec asks for, sent once
    assert sent["path"] == "/hook" and "one" in json.dumps(sent["json"]) and "Succeeded" in json.dumps(sent["json"])
    cli = fpgaflow("queue", "--all", "--home", str(srv.home)).stdout
    assert "one" in cli and "Succeeded" in cli


@pytest.mark.slow
def test_a_bad_manifest_is_refused_with_its_fields_named_and_nothing_queued(server, tmp_path):
    srv = server()
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: fpgaflow.io/v1alpha1\nkind: Experiment\nmetadata: {name: bad}\n"
                   "spec: {hls: {reuseFactor: 0}, serve: {targets: [tpu]}}\n")
    with srv.client() as client:
        with pytest.raises(SpecError) as err:
            client.submit(bad)
        fields = {field for field, _ in err.value.problems}
        assert {"spec.hls.reuseFactor", "spec.serve.targets[0]"} <= fields
        assert client.queue(all=True)["entries"] == []
    done = fpgaflow("submit", str(bad), str(manifest(tmp_path, "good")), "--home", str(srv.home), check=False)
    assert done.returncode == 2 and "spec.hls.reuseFactor" in done.stderr
    assert "good: queued on local" in done.stdout, "the good manifest beside it is queued"


@pytest.mark.slow
def test_the_queue_runs_by_priority_then_submission_under_the_limit(server, tmp_path):
    srv = server("--max-trials", "1")
    with srv.client() as client:
        client.submit(manifest(tmp_path, "first", epochs=8))
        wait_for(lambda: states(client)["first"] == "Running", what="the first to start")
        for name, priority in (("low", 0), ("high", 5), ("later", 0)):
            client.submit(manifest(tmp_path, name, priority=priority))
        with pytest.raises(AlreadyQueued):
            client.submit(manifest(tmp_path, "low"))
        queued = {e["name"]: e for e in client.queue()["entries"]}
        assert [queued[n]["position"] for n in ("high", "low", "later")] == [1, 2, 3]
        assert queued["high"]["waiting"] == "waits for 1 local trial slot: 1 of 1 in use"
        assert queued["later"]["waiting"] == "behind 'high', which waits for local trial slots"
        running = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            entries = client.queue(all=True)["entries"]
            running.append(sum(e["state"] == "Running" for e in entries))
            if all(e["state"] == "Succeeded" for e in entries):
                break
            time.sleep(0.1)
        assert max(running) == 1, "never more than the one trial slot"
        order = sorted(client.queue(all=True)["entries"], key=lambda e: e["started"])
        assert [e["name"] for e in order] == ["first", "high", "low", "later"]
        assert all(e["state"] == "Succeeded" for e in order)


@pytest.mark.slow
def test_cancel_stops_a_running_experiment_and_drops_a_queued_one(server, tmp_path):
    srv = server("--max-trials", "1", epoch_seconds=1.0)
    with srv.client() as client:
        client.submit(manifest(tmp_path, "long", epochs=60))
        client.submit(manifest(tmp_path, "waiting"))
        wait_for(lambda: "long start 0" in srv.runs_started(), what="the training to start")
        pgid = client.queue(name="long")["entries"][0]["handle"]["pgid"]
        assert client.cancel("waiting")["state"] == "Cancelled"
        assert client.cancel("long")["state"] == "Cancelled"
        assert not group_alive(pgid), "the run's whole process group is gone"
        assert states(client) == {"long": "Cancelled", "waiting": "Cancelled"}
        time.sleep(1.5)  # a scheduling round or two: nothing starts the cancelled one
        assert not any(line.startswith("waiting") for line in srv.runs_started())
    shown = json.loads(fpgaflow("show", "long", "--json", "--home", str(srv.home)).stdout)
    assert shown["phase"] == "Failed" and shown["reason"] == "Cancelled"


@pytest.mark.slow
def test_a_server_killed_with_sigkill_loses_nothing_and_runs_nothing_twice(server, tmp_path):
    """kill -9 the server while one experiment runs and two wait; kill -9 that run too, as a crash of the machine
    would; start the server again: the run is resumed from its checkpoint, the others run once each."""
    srv = server("--max-trials", "1", epoch_seconds=0.5)
    with srv.client() as client:
        client.submit(manifest(tmp_path, "a", epochs=6))
        client.submit(manifest(tmp_path, "b", epochs=1))
        client.submit(manifest(tmp_path, "c", epochs=1))
        wait_for(lambda: (tmp_path / "home/experiments/a/t00/train/checkpoints").exists()
                 and any((tmp_path / "home/experiments/a/t00/train/checkpoints").iterdir()), what="a checkpoint of a")
        pgid = client.queue(name="a")["entries"][0]["handle"]["pgid"]
    srv.kill9()
    os.killpg(pgid, signal.SIGKILL)
    srv.start()
    with srv.client() as client:
        wait_for(lambda: all(s == "Succeeded" for s in states(client).values()) and len(states(client)) == 3,
                 timeout=180, what="all three to succeed")
        a = client.queue(name="a")["entries"][0]
        assert a["attempt"] == 2 and "resumed" in a["message"]
    starts = srv.runs_started()
    assert starts.count("b start 0") == 1 and starts.count("c start 0") == 1
    assert starts[0] == "a start 0" and any(line.startswith("a start ") and line != "a start 0" for line in starts), (
        f"a resumed from its checkpoint: {starts}")
    history = json.loads((tmp_path / "home/experiments/a/t00/train/history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3, 4, 5, 6], "no epoch lost or repeated"


@pytest.mark.slow
def test_a_run_outlives_a_killed_server_and_is_found_again(server, tmp_path):
    srv = server("--max-trials", "1", epoch_seconds=0.5)
    with srv.client() as client:
        client.submit(manifest(tmp_path, "steady", epochs=8))
        wait_for(lambda: "steady start 0" in srv.runs_started(), what="the training to start")
    srv.kill9()
    srv.start()
    with srv.client() as client:
        assert states(client) == {"steady": "Running"}
        wait_for(lambda: states(client)["steady"] == "Succeeded", what="the run to end")
        assert client.queue(name="steady")["entries"][0]["attempt"] == 1
    assert srv.runs_started() == ["steady start 0"], "re-attached, not started again"


@pytest.mark.slow
def test_calls_without_the_token_are_refused_and_queue_nothing(server, tmp_path):
    srv = server()
    for token in (None, "not-the-token"):
        with srv.client(token=token) as client, pytest.raises(Unauthenticated, match="refused the call"):
            client.submit(manifest(tmp_path, "sneaky"))
    done = fpgaflow("queue", "--home", str(srv.home), env={"FPGAFLOW_TOKEN": "x" * 20}, check=False)
    assert done.returncode == 4 and "a wrong token" in done.stderr
    with srv.client() as client:
        assert client.queue(all=True)["entries"] == []
    refused = fpgaflow("server", "--host", "0.0.0.0", "--home", str(tmp_path / "other"), check=False)
    assert refused.returncode == 2 and "needs a token" in refused.stderr


@pytest.mark.slow
def test_a_full_disk_refuses_submissions_and_leaves_the_queue_whole(server, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs as the run store: needs root")
    store = tmp_path / "small"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(store)], check=True)
    try:
        srv = Server(store, "--max-trials", "1", "--min-free-disk-mib", "1")
        (tmp_path / "train.py").write_text(TRAIN_SCRIPT)  # the manifests stay outside the small store
        try:
            with srv.client() as client:
                client.submit(manifest(tmp_path, "kept", epochs=1))
                wait_for(lambda: states(client)["kept"] == "Succeeded", what="the first experiment")
                filler = store / "filler"
                with filler.open("wb") as fh:  # fill the file system up to the last block
                    try:
                        while True:
                            fh.write(b"\0" * 65536)
                            fh.flush()
                    except OSError:
                        pass
                with pytest.raises(StoreFull, match="nothing was queued|full"):
                    client.submit(manifest(tmp_path, "refused"))
                assert states(client) == {"kept": "Succeeded"}
                filler.unlink()
                client.submit(manifest(tmp_path, "after", epochs=1))
                wait_for(lambda: states(client).get("after") == "Succeeded", what="a submission after space came back")
            with sqlite3.connect(store / "home" / "index.sqlite") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            srv.stop()
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


@pytest.mark.slow
def test_two_hundred_manifests_at_once_all_run_under_the_limits(server, tmp_path):
    """200 tiny experiments submitted at once: all queued, never more than the limit running, all succeed. Prints
    the queue's overhead per experiment: the wall time the slots were held beyond the runs' own durations."""
    slots, n = 4, 200
    srv = server("--max-trials", str(slots), epoch_seconds=0.0)
    paths = [manifest(tmp_path, f"tiny-{i:03d}") for i in range(n)]
    with srv.client() as client:
        began = time.monotonic()
        for path in paths:
            client.submit(path)
        submitted = time.monotonic() - began
        assert len(client.queue()["entries"]) + sum(s != "Queued" for s in states(client).values()) >= n
        peak = 0
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            reply = client.queue(all=True)
            peak = max(peak, sum(e["state"] == "Running" for e in reply["entries"]))
            if all(e["state"] in ("Succeeded", "Failed") for e in reply["entries"]):
                break
            time.sleep(0.2)
        wall = time.monotonic() - began
        entries = reply["entries"]
    assert len(entries) == n and all(e["state"] == "Succeeded" for e in entries), [e for e in entries if e["state"] != "Succeeded"][:3]
    assert peak <= slots
    busy = sum(e["finished"] - e["started"] for e in entries)
    overhead = (wall * slots - busy) / n
    print(f"\n{n} experiments, {slots} slots: submitted in {submitted:.1f} s ({1000 * submitted / n:.0f} ms each), "
          f"all done in {wall:.1f} s; a run took {busy / n:.2f} s on average; queue overhead "
          f"{overhead:.2f} s of slot time per experiment")
    assert sorted(srv.runs_started()) == sorted(f"tiny-{i:03d} start 0" for i in range(n)), "each ran once"


def certificates(folder: Path) -> dict[str, Path]:
    """A CA, and a server and a client certificate it signed (openssl), for 127.0.0.1."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=fpgaflow test CA")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
                f"{who}.pem", "-days", "1", "-extfile", "san.ext")
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.mark.slow
def test_with_client_certificates_only_a_certified_client_gets_in(server, tmp_path):
    certs = certificates(tmp_path)
    srv = server("--tls-cert", str(certs["server.pem"]), "--tls-key", str(certs["server.key"]), "--tls-client-ca",
                 str(certs["ca.pem"]))
    with srv.client(tls_ca=certs["ca.pem"]) as client, pytest.raises(ServerUnavailable):
        client.submit(manifest(tmp_path, "uncertified"))  # the TLS handshake fails: no call reaches the server
    with srv.client(tls_ca=certs["ca.pem"], tls_cert=certs["client.pem"], tls_key=certs["client.key"]) as client:
        assert client.submit(manifest(tmp_path, "certified"))["name"] == "certified"
        assert [e["name"] for e in client.queue(all=True)["entries"]] == ["certified"]
