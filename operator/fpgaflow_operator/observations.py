"""What the status of a Job or a Pod means to a trial: pure functions from Kubernetes' status blocks to the
operator's vocabulary (``reconcile.JobState`` and pod problems), called by the handlers' indexes.

A Job is read from its conditions, as the Job controller writes them: a Job whose pod was OOM-killed once is
still retrying (``failed: 1`` and no ``Failed`` condition), not failed. A pod is read for what keeps it from
running: the scheduler's reason when it cannot be placed, the kubelet's when its image cannot be pulled or its
container cannot start or keeps crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fpgaflow_operator.reconcile import JobState, Problem

# The kubelet's waiting reasons that keep a container from running until someone acts (Kubernetes does retry
# them, with a back-off; they are reported at once, and the report goes when the pod runs)
WAITING_PROBLEMS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "RegistryUnavailable",
    "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff", "RunContainerError",
})


def job_state(status: Mapping[str, Any]) -> tuple[JobState, str]:
    """(state, why) of a Job from its conditions: ``failed`` only once the Job controller has given up on it
    (its backoff limit, a pod failure policy's FailJob, a deadline), with the controller's reason."""
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conditions:
            return "succeeded", ""
    for kind in ("Failed", "FailureTarget"):
        if kind in conditions:
            condition = conditions[kind]
            return "failed", f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}".rstrip(": ")
    return "active", ""


def pod_problem(name: str, status: Mapping[str, Any]) -> Problem | None:
    """Why a pod that should run does not (reason, message naming the pod), or None: it is running, finished,
    or on its way (scheduled, pulling, starting)."""
    if status.get("phase") in ("Succeeded", "Failed"):
        return None  # a finished pod: its Job says what it means
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            message = condition.get("message", "")
            reason = "ClaimNotBound" if "PersistentVolumeClaim" in message else "Unschedulable"
            return reason, f"pod {name} cannot be scheduled: {message}"
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in WAITING_PROBLEMS:
            message = waiting.get("message") or ""
            last = (container.get("lastState") or {}).get("terminated") or {}
            if waiting["reason"] == "CrashLoopBackOff" and last:
                message = f"exited with {last.get('exitCode')} ({last.get('reason', '')}); {message}"
            return waiting["reason"], f"pod {name}, container {container.get('name')}: {message}".rstrip(": ")
    return None
