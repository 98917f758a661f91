"""Faults on the real node (tests/cluster/node), with the chart installed as the README says: the operator's pod
deleted, a trainer killed, a stage that fails on purpose, and pods that cannot run (no image, no room). Each
ends in the state a user relies on, and says why."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster import kube
from tests.cluster.conftest import NAMESPACE
from tests.cluster.kube import experiment, get_json, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

OPERATOR = "app.kubernetes.io/component=operator"


def tiny(name: str, targets=("cpu",), **spec) -> dict:
    base = {"dataset": {"name": "jets", "samples": 5000, "seed": 5}, "model": {"layers": [16]},
            "train": {"epochs": 2, "batchSize": 128, "learningRate": 0.01},
            "serve": {"targets": list(targets)}, "benchmark": {"concurrency": [1], "requestsPerClient": 20, "warmup": 2}}
    base.update(spec)
    return experiment(name, base)


def apply(on_node, manifest: dict, namespace: str = NAMESPACE) -> None:
    kube.apply(on_node.plane, manifest, namespace)


def finished(on_node, name: str, timeout: float = 600, namespace: str = NAMESPACE) -> dict:
    def phase():
        status = on_node.experiment(name, namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    return wait_for(phase, timeout, f"Experiment {name} to finish", every=2, explain=lambda: on_node.explain(namespace))


def children(on_node, name: str) -> dict[str, str]:
    """kind/name -> uid of what the Experiment owns."""
    found = get_json(on_node.plane, "jobs,deployments,services", "-n", NAMESPACE, "-l", f"fpgaflow.io/experiment={name}")
    return {f"{c['kind']}/{c['metadata']['name']}": c["metadata"]["uid"] for c in found["items"]}


def delete(on_node, name: str, namespace: str = NAMESPACE) -> None:
    on_node.plane.kubectl("delete", "experiment", name, "-n", namespace, "--wait=true", "--timeout=90s", check=False)


def trial_folder(on_node, name: str):
    return on_node.artifacts / NAMESPACE / name / "t00"


def test_a_deleted_operator_pod_comes_back_and_the_experiment_completes(on_node):
    name = "operator-restart"
    [before] = get_json(on_node.plane, "pods", "-n", NAMESPACE, "-l", OPERATOR)["items"]
    apply(on_node, tiny(name))
    try:
        wait_for(lambda: f"Job/{name}-t00-train" in children(on_node, name), 60, "the train Job")
        first = children(on_node, name)
        on_node.plane.kubectl("delete", "pod", "-n", NAMESPACE, before["metadata"]["name"], "--wait=false")
        status = finished(on_node, name)
        assert status["phase"] == "Succeeded", (status, on_node.explain())
        [after] = get_json(on_node.plane, "pods", "-n", NAMESPACE, "-l", OPERATOR)["items"]
        assert after["metadata"]["uid"] != before["metadata"]["uid"], "the Deployment started a new operator pod"
        last = children(on_node, name)
        assert sorted(last) == sorted([f"Job/{name}-t00-{s}" for s in ("train", "convert", "bench")]
                                      + [f"Deployment/{name}-t00-cpu", f"Service/{name}-t00-cpu"]), "one of each child"
        assert all(last[child] == uid for child, uid in first.items()), "what existed before the restart was kept, not made again"
        train_pods = get_json(on_node.plane, "pods", "-n", NAMESPACE, "-l", f"job-name={name}-t00-train")["items"]
        assert len(train_pods) == 1, "the training ran once"
    finally:
        delete(on_node, name)


def test_a_killed_trainer_is_retried_and_resumes_from_its_last_checkpoint(on_node):
    name = "trainer-killed"
    apply(on_node, tiny(name, targets=("fpga",), dataset={"name": "jets", "samples": 20000, "seed": 5},
                        model={"layers": [32, 16]}, train={"epochs": 8, "batchSize": 128}))
    pointer = trial_folder(on_node, name) / "train" / "checkpoints" / "latest.json"
    try:
        wait_for(lambda: pointer.exists() and json.loads(pointer.read_text())["epoch"] >= 2, 300,
                 "two checkpoints", every=0.2, explain=on_node.explain)
        [pod] = get_json(on_node.plane, "pods", "-n", NAMESPACE, "-l", f"job-name={name}-t00-train")["items"]
        container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
        on_node.node.ctr("tasks", "kill", "--signal", "SIGKILL", container)  # killed from outside: the OOM killer's signal
        seen = len(json.loads((trial_folder(on_node, name) / "train" / "history.json").read_text())["epochs"])
        status = finished(on_node, name)
        assert status["phase"] == "Succeeded", (status, on_node.explain())
        job = get_json(on_node.plane, "job", f"{name}-t00-train", "-n", NAMESPACE)["status"]
        assert (job.get("failed"), job.get("succeeded")) == (1, 1), job
        result = json.loads((trial_folder(on_node, name) / "train" / "result.json").read_text())
        assert result["resumed_from_epoch"] >= max(seen - 1, 1), "at most the epoch in progress was lost"
        history = json.loads((trial_folder(on_node, name) / "train" / "history.json").read_text())["epochs"]
        assert [row["epoch"] for row in history] == list(range(1, 9)), "no epoch trained twice in the history"
    finally:
        delete(on_node, name)


def test_a_stage_that_fails_on_purpose_fails_its_trial_at_once(on_node):
    name = "fidelity-refused"
    apply(on_node, tiny(name, targets=("fpga",), hls={"precision": "ap_fixed<4,2>", "minAgreement": 1.0}))
    try:
        status = finished(on_node, name)
        [trial] = status["trials"]
        assert (status["phase"], trial["stage"], trial["reason"]) == ("Failed", "convert", "FidelityCheckFailed"), status
        assert "minAgreement" in trial["message"]
        # the trial fails as soon as the stage's error.json is written; the Job controller then fails the Job by
        # its pod failure policy, without a second pod: the same spec would fail the same way
        def job_failed():
            job = get_json(on_node.plane, "job", f"{name}-t00-convert", "-n", NAMESPACE)["status"]
            reasons = {c["type"]: c.get("reason") for c in job.get("conditions", []) if c["status"] == "True"}
            return job if reasons.get("Failed") == "PodFailurePolicy" else None

        job = wait_for(job_failed, 60, "the convert Job to fail by its pod failure policy", explain=on_node.explain)
        assert job.get("failed") == 1 and not job.get("active"), job
        pods = get_json(on_node.plane, "pods", "-n", NAMESPACE, "-l", f"job-name={name}-t00-convert")["items"]
        assert len(pods) == 1, "not retried"
        assert f"Deployment/{name}-t00-fpga" not in children(on_node, name), "nothing is served after a refused conversion"
    finally:
        delete(on_node, name)


# A second release of the chart in a namespace of its own, with values that keep the train pod from running
CANNOT_RUN = {
    "image": ({"stageImages.trainer": "docker.io/fpgaflow/trainer:absent"}, {"ErrImagePull", "ImagePullBackOff"},
              "docker.io/fpgaflow/trainer:absent"),
    "room": ({"stageResources.train.requests.cpu": "64"}, {"Unschedulable"}, "Insufficient cpu"),
}


@pytest.mark.parametrize("case", sorted(CANNOT_RUN))
def test_a_pod_that_cannot_run_says_why_within_a_minute(on_node, case):
    values, reasons, words = CANNOT_RUN[case]
    release = namespace = f"cannot-run-{case}"
    on_node.node.local_volume(namespace, claim=(namespace, f"{release}-artifacts"))
    sets = [arg for key, value in values.items() for arg in ("--set-string", f"{key}={value}")]
    on_node.steps.run(f"helm install {release} charts/fpgaflow --namespace {namespace} --create-namespace --wait --timeout 3m "
                      + " ".join(sets))
    try:
        apply(on_node, tiny("blocked"), namespace)
        applied = time.monotonic()

        def reported():
            status = on_node.experiment("blocked", namespace).get("status") or {}
            trial = (status.get("trials") or [{}])[0]
            return trial if trial.get("reason") in reasons else None

        trial = wait_for(reported, 60, f"the trial to say why its train pod cannot run ({case})", every=1,
                         explain=lambda: on_node.explain(namespace))
        print(f"{case}: reported {trial['reason']} after {time.monotonic() - applied:.0f} s")
        assert (trial["phase"], trial["stage"]) == ("Running", "train")
        assert trial["message"].startswith("train: pod blocked-t00-train-") and words in trial["message"], trial
    finally:
        delete(on_node, "blocked", namespace)
        on_node.steps.run(f"helm uninstall {release} --namespace {namespace} --wait")
        on_node.plane.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s", check=False)
        on_node.plane.kubectl("delete", "pv", namespace, check=False)



def test_an_artifacts_claim_that_cannot_bind_is_named_by_the_operator_pod(on_node):
    """The claim is the operator's volume too: with none to bind (here a storage class that does not exist) no
    operator runs to report on trials, and its own pod says why, as the README tells a user to look."""
    from fpgaflow_operator.observations import pod_problem

    release = namespace = "cannot-bind"
    on_node.steps.run(f"helm install {release} charts/fpgaflow --namespace {namespace} --create-namespace "
                      "--set-string artifacts.storageClassName=absent")
    try:
        def unscheduled():
            pods = get_json(on_node.plane, "pods", "-n", namespace, "-l", OPERATOR)["items"]
            return pods and pod_problem(pods[0]["metadata"]["name"], pods[0].get("status") or {})

        reason, message = wait_for(unscheduled, 60, "the operator pod to say why it waits", explain=lambda: on_node.explain(namespace))
        assert reason == "ClaimNotBound" and "unbound immediate PersistentVolumeClaims" in message, message
    finally:
        on_node.steps.run(f"helm uninstall {release} --namespace {namespace}")
        on_node.plane.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s", check=False)
