"""Kubernetes' Job and Pod statuses, read as the operator reads them (statuses as the controllers write them)."""

import pytest

from fpgaflow_operator.observations import job_state, pod_problem


@pytest.mark.parametrize("status, state", [
    ({}, "active"),
    ({"active": 1, "failed": 1}, "active"),  # one pod OOM-killed, the Job retries: not failed
    ({"succeeded": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}, "succeeded"),
    ({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}, "succeeded"),
    ({"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit"}]}, "failed"),
    ({"failed": 1, "conditions": [{"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"}]}, "failed"),
    ({"conditions": [{"type": "Suspended", "status": "True"}]}, "active"),
])
def test_a_job_is_read_from_its_conditions(status, state):
    assert job_state(status)[0] == state


def test_a_failed_job_says_why():
    assert job_state({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                      "message": "Job has reached the specified backoff limit"}]}) == \
        ("failed", "BackoffLimitExceeded: Job has reached the specified backoff limit")


def test_what_keeps_a_pod_from_running():
    unschedulable = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                         "message": "0/1 nodes are available: 1 Insufficient cpu."}]}
    assert pod_problem("p", unschedulable) == ("Unschedulable", "pod p cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu.")
    claim = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                 "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]}
    assert pod_problem("p", claim)[0] == "ClaimNotBound"
    pull = {"phase": "Pending", "containerStatuses": [{"name": "train", "state": {"waiting": {
        "reason": "ErrImagePull", "message": "failed to pull and unpack image \"docker.io/fpgaflow/trainer:9\""}}}]}
    assert pod_problem("p", pull) == ("ErrImagePull", 'pod p, container train: failed to pull and unpack image "docker.io/fpgaflow/trainer:9"')
    crash = {"phase": "Running", "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff",
             "message": "back-off 40s"}}, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
    assert pod_problem("p", crash) == ("CrashLoopBackOff", "pod p, container server: exited with 1 (Error); back-off 40s")


@pytest.mark.parametrize("status", [
    {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
     "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
    {"phase": "Running", "containerStatuses": [{"name": "c", "state": {"running": {}}}]},
    {"phase": "Failed", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 137}}}]},
    {"phase": "Succeeded"},
])
def test_a_pod_on_its_way_or_finished_has_no_problem(status):
    assert pod_problem("p", status) is None
