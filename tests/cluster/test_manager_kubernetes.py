"""`fpgaflow server`'s Kubernetes executor on the real node: a submitted manifest becomes the Experiment resource,
the operator (installed by the README's helm step) runs it in pods, the server follows its status into the run
store, so that `queue`, `list` and `export --csv` see it, and copies its folder from the artifacts volume when it
ends, so that `show`, `report` and `logs` read it as a local run's; a cancel deletes the resource."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
import yaml

from tests.cluster.conftest import NAMESPACE
from tests.cluster.kube import get_json
from tests.conftest import ROOT, fpgaflow
from tests.service.test_manager import Server, states, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def small(tmp_path, name: str):
    doc = yaml.safe_load((ROOT / "examples" / "jet-tagger-small.yaml").read_text())
    doc["metadata"]["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def k8s_server(on_node, tmp_path):
    server = Server(tmp_path, "--kubernetes", "--executor", "kubernetes", "--kube-namespace", NAMESPACE,
                    env={"KUBECONFIG": str(on_node.plane.admin_kubeconfig)})
    try:
        yield server
    finally:
        server.stop()


def test_a_submitted_experiment_runs_on_the_cluster_and_lands_in_the_run_store(on_node, k8s_server, tmp_path):
    with k8s_server.client() as client:
        entry = client.submit(small(tmp_path, "queued-small"))
        assert entry["executor"] == "kubernetes"
        started = time.time()
        while states(client)["queued-small"] in ("Queued", "Running"):
            assert time.time() - started < 900, ("no result after 15 minutes", on_node.explain())
            time.sleep(2)
        done = client.queue(name="queued-small")["entries"][0]
        assert done["state"] == "Succeeded", (done, on_node.explain())
        assert done["handle"]["uid"] == on_node.experiment("queued-small")["metadata"]["uid"]
        pools = [p for p in client.resources()["pools"] if p["executor"] == "kubernetes"]
        assert [p["name"] for p in pools] == ["fpgaflow-node"] and pools[0]["cpus"] >= 1
        run_log = b"".join(client.logs("queued-small")).decode()
        assert "created Experiment fpgaflow/queued-small" in run_log and "t00: Succeeded" in run_log
        assert "results copied into" in run_log, run_log
        train_log = b"".join(client.logs("queued-small", trial="t00", stage="train")).decode()
        assert "epoch" in train_log.lower(), train_log[-2000:]
    home = str(k8s_server.home)
    assert "queued-small" in fpgaflow("list", "--home", home).stdout
    [row] = [r for r in csv.DictReader(io.StringIO(fpgaflow("export", "--csv", "--home", home).stdout))
             if r["experiment"] == "queued-small"]
    assert row["phase"] == "Succeeded" and float(row["accuracy_emulated"]) > 0.5
    shown = json.loads(fpgaflow("show", "queued-small", "--json", "--home", home).stdout)
    [trial] = shown["trials"]
    assert trial["phase"] == "Succeeded" and trial["accuracy"]["emulated"] == float(row["accuracy_emulated"])
    assert trial["estimate"]["dsp"] > 0 and trial["benchmark"], "read from the copied trial folder"
    report = fpgaflow("report", "queued-small", "--home", home).stdout
    assert "fpga" in report and (k8s_server.home / "experiments" / "queued-small" / "report.md").exists()


def test_a_cancelled_experiment_leaves_the_cluster(on_node, k8s_server, tmp_path):
    with k8s_server.client() as client:
        client.submit(small(tmp_path, "cancelled-small"))
        wait_for(lambda: states(client)["cancelled-small"] == "Running", what="the Experiment to be created")
        assert client.cancel("cancelled-small")["state"] == "Cancelled"
    wait_for(lambda: not any(e["metadata"]["name"] == "cancelled-small"
                             for e in get_json(on_node.plane, "experiments", "-n", NAMESPACE)["items"]),
             timeout=120, what="the Experiment to be deleted")
    wait_for(lambda: not [p for p in get_json(on_node.plane, "pods", "-n", NAMESPACE)["items"]
                          if p["metadata"]["name"].startswith("cancelled-small")],
             timeout=180, what="its pods to be gone")
