"""The README's Kubernetes section, command for command, on a real node (tests/cluster/node): `helm install` of
the chart runs the operator in its own pod, `kubectl apply` of a small jet tagger takes the Experiment to
Succeeded with every stage run by the kubelet in its container, and a Prometheus that discovers the pods
through the Kubernetes API answers every panel of the dashboard for that run."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import yaml
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from charts.images import images
from fpgaflow import prometheus as prometheus_queries
from fpgaflow.dashboards import ALL, DASHBOARD_PATH, panel_queries
from fpgaflow.trial import INPUT_NAME
from fpgaflow_inference.tensors import from_array
from tests.cluster.conftest import NAMESPACE
from tests.cluster.kube import get_json, readme_steps, wait_for
from tests.conftest import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MANIFEST = ROOT / "examples" / "jet-tagger-small.yaml"
NAME = yaml.safe_load(MANIFEST.read_text())["metadata"]["name"]
NODE = "fpgaflow-node"


def test_the_readme_steps_are_what_this_test_runs():
    steps = readme_steps()
    assert steps[0] == "make cluster-up" and steps[-1] == "make cluster-down"
    assert steps[1].startswith("export KUBECONFIG=$PWD/.cache/cluster/admin.kubeconfig")
    assert [s.split()[0] for s in steps[2:-1]] == ["helm", "kubectl", "kubectl", "kubectl", "kubectl"]
    assert f"-f examples/{MANIFEST.name}" in steps[3] and f"experiment/{NAME}" in steps[4]


@pytest.fixture(scope="module")
def small_run(on_node):
    """`kubectl apply` of the small jet tagger, then the README's `kubectl wait` for Succeeded (given up early,
    with what a person would look at, if the Experiment fails instead)."""
    apply, wait, *shows = [line for line in readme_steps() if line.startswith("kubectl ")]
    started = time.time()
    on_node.steps.run(apply)
    waiting = on_node.steps.start(wait)
    try:
        while waiting.poll() is None:
            status = on_node.experiment(NAME).get("status") or {}
            assert status.get("phase") != "Failed", (status, on_node.explain())
            assert time.time() - started < 900, ("no result after 15 minutes", status, on_node.explain())
            time.sleep(2)
    finally:
        if waiting.poll() is None:
            waiting.kill()
        output = waiting.communicate()[0]
    assert waiting.returncode == 0, (output, on_node.explain())
    seconds = time.time() - started
    print(f"kubectl apply to Succeeded: {seconds:.0f} s")
    shown = [on_node.steps.run(line).stdout for line in shows]
    return SimpleNamespace(seconds=seconds, start=started, end=time.time(), shown=shown,
                           experiment=on_node.experiment(NAME))


def test_an_experiment_applied_with_kubectl_reaches_succeeded(small_run):
    status = small_run.experiment["status"]
    assert (status["phase"], status["trialsSummary"], status["bestTrial"]) == ("Succeeded", "1/1", "t00")
    [trial] = status["trials"]
    assert trial["accuracy"]["float"] > 0.5 and trial["accuracy"]["emulated"] > 0.5
    assert trial["unavailable"] == {"gpu": "no node offers nvidia.com/gpu"}, "the node has no GPU: gpu is reported, not awaited"
    assert {"cpu@1", "cpu@4", "fpga@1", "fpga@4"} <= set(trial["benchmark"])
    assert all(run["throughputRps"] > 0 for run in trial["benchmark"].values())
    # the bench Job reached the servers by their Services' cluster DNS names
    assert trial["endpoints"] == {t: f"{NAME}-t00-{t}.{NAMESPACE}.svc:8500" for t in ("cpu", "fpga")}
    listed, shown = small_run.shown
    assert NAME in listed and "Succeeded" in listed and "1/1" in listed
    assert json.loads(shown)["name"] == "t00"


def test_every_stage_ran_in_its_container_on_the_node(on_node, small_run):
    named = images()
    pods = get_json(on_node.plane, "pods", "-n", NAMESPACE)["items"]

    def of(key: str, value: str) -> list[dict]:
        return [p for p in pods if p["metadata"]["labels"].get(key) == value]

    [operator] = of("app.kubernetes.io/component", "operator")
    assert operator["spec"]["serviceAccountName"] == "fpgaflow-operator" and operator["spec"]["nodeName"] == NODE
    assert operator["spec"]["containers"][0]["image"] == named["operator"] and operator["status"]["phase"] == "Running"
    for stage, image in (("train", named["trainer"]), ("convert", named["converter"]), ("bench", named["inference"])):
        [pod] = of("fpgaflow.io/stage", stage)
        [container] = pod["status"]["containerStatuses"]
        assert pod["spec"]["nodeName"] == NODE and pod["spec"]["containers"][0]["image"] == image
        assert container["state"]["terminated"]["exitCode"] == 0, (stage, container)
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    for target in ("cpu", "fpga"):
        [pod] = of("fpgaflow.io/target", target)
        assert pod["status"]["phase"] == "Running" and pod["spec"]["containers"][0]["image"] == named["inference"]
    assert not of("fpgaflow.io/target", "gpu")
    children = on_node.plane.kubectl("get", "jobs,deployments,services", "-n", NAMESPACE, "-l",
                                     f"fpgaflow.io/experiment={NAME}", "-o", "name").stdout.split()
    assert sorted(children) == sorted([f"job.batch/{NAME}-t00-{s}" for s in ("train", "convert", "bench")]
                                      + [f"deployment.apps/{NAME}-t00-{t}" for t in ("cpu", "fpga")]
                                      + [f"service/{NAME}-t00-{t}" for t in ("cpu", "fpga")])
    # the results are on the node's volume, in the trial folder the operator made
    trial = on_node.artifacts / NAMESPACE / NAME / "t00"
    assert all((trial / stage / "result.json").exists() for stage in ("train", "convert", "bench"))


def test_the_jets_were_simulated_once_onto_the_artifacts_volume(on_node, small_run):
    """The train pod simulated the set into datasets/ on the artifacts volume, where every later trial of any
    Experiment reads it (the fault tests' trials do)."""
    record = json.loads((on_node.artifacts / NAMESPACE / NAME / "t00" / "train" / "dataset.json").read_text())
    simulation = record["simulation"]
    assert record["source"] == "simulated with Pythia 8.317.2 and FastJet 3.5.2, no detector simulation"
    assert simulation["cache"] == "/artifacts/datasets" and simulation["chunksMade"] + simulation["chunksReused"] == 80
    chunks = [folder for folder in (on_node.artifacts / "datasets").iterdir() if (folder / "made.json").exists()]
    assert len(chunks) >= 80 and {folder.name.split("-")[0] for folder in chunks} >= set("gqwzt")


def _requests_with_errors(on_node) -> None:
    """Good requests and some of the wrong shape straight to each server pod (its address on the pods' bridge),
    so that the errors panel has something to show."""
    x = np.load(on_node.artifacts / NAMESPACE / NAME / "t00" / "train" / "testset.npz")["x"][:50].astype(np.float32)
    for target in ("cpu", "fpga"):
        [pod] = get_json(on_node.plane, "pods", "-n", NAMESPACE, "-l", f"fpgaflow.io/target={target}")["items"]
        with grpc.insecure_channel(f"{pod['status']['podIP']}:8500") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for i in range(60):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = NAME
                batch = x[i % 40: i % 40 + 1]
                request.inputs[INPUT_NAME].CopyFrom(from_array(batch[:, :3] if i % 6 == 5 else batch))
                try:
                    stub.Predict(request, timeout=30)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc


DASHBOARD = json.loads((ROOT / DASHBOARD_PATH).read_text())
QUERIES = panel_queries(DASHBOARD)


@pytest.fixture(scope="module")
def scraped(on_node, small_run):
    _requests_with_errors(on_node)
    prometheus = on_node.prometheus
    end = time.time()
    wait_for(lambda: prometheus.query(f"fpgaflow_requests_total{{code!=\"OK\", k8s_experiment=\"{NAME}\"}}"),
             30, "Prometheus to scrape the errors")
    time.sleep(4)
    return prometheus, small_run.start, max(end, time.time())


def test_prometheus_discovers_the_pods_through_kubernetes(scraped):
    prometheus = scraped[0]
    targets = prometheus.active_targets()
    pods = {t["labels"].get("pod", "") for t in targets if t["labels"].get("k8s_experiment") == NAME}
    assert {f"{NAME}-t00-cpu", f"{NAME}-t00-fpga"} <= {p.rsplit("-", 2)[0] for p in pods}, targets


@pytest.mark.parametrize("title, ref, expr", QUERIES, ids=[f"{t}/{r}" for t, r, _ in QUERIES])
def test_every_dashboard_panel_returns_data_for_the_run(scraped, title, ref, expr):
    prometheus, start, end = scraped
    query = prometheus_queries.substitute(expr, model=ALL, experiment=ALL, rate_window="10s")
    series = prometheus.query_range(query, start, end, step=2)
    values = [float(v) for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
    assert values, f"panel {title!r} query {ref} returned no data: {query}"


def test_the_training_was_scraped_while_it_ran(scraped):
    prometheus, start, end = scraped
    progress = prometheus.query_range(f'fpgaflow_train_epoch{{experiment="{NAME}"}}', start, end, step=2)
    assert {s["metric"].get("k8s_stage") for s in progress} == {"train"}
    assert max(float(v) for s in progress for _, v in s["values"]) == 2  # the run's two epochs


def test_kubectl_logs_show_each_stage(on_node, small_run):
    for stage in ("train", "convert", "bench"):
        assert on_node.plane.kubectl("logs", "-n", NAMESPACE, f"job/{NAME}-t00-{stage}").stdout.strip(), stage
