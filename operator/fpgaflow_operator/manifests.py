"""Kubernetes objects of a trial: pure functions from names and settings to manifests.

Every child carries the labels ``fpgaflow.io/experiment`` and ``fpgaflow.io/trial`` and mounts the
artifacts volume at the same path as the operator, so that a trial folder is the same path in every
pod. Ownership (ownerReferences) is added by the handler with ``kopf.adopt``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpgaflow import __version__
from fpgaflow.spec import GROUP, LABEL_EXPERIMENT, LABEL_TRIAL
from fpgaflow.trial import STAGE_SERVICE

GRPC_PORT = 8500
METRICS_PORT = 8000
# For a Prometheus configured with the common kubernetes-pods / kubernetes-service-endpoints jobs.
SERVER_TERMINATION_GRACE_S = 40
METRICS_LINGER_S = 15  # the chart's scrape interval: the final epoch's values are scraped before the pod ends
SCRAPE_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT), "prometheus.io/path": "/metrics"}


@dataclass(frozen=True)
class ClusterSettings:
    """What the operator's Deployment passes down (chart values through the environment)."""

    artifacts_root: Path = Path("/artifacts")
    artifacts_claim: str = "fpgaflow-artifacts"
    images: dict[str, str] = field(  # stage -> image; the chart's stageImages override these
        default_factory=lambda: {stage: image_name(service) for stage, service in STAGE_SERVICE.items()}
    )
    gpu_image: str = field(default_factory=lambda: image_name("inference-gpu"))  # the gpu target's server
    image_pull_policy: str = "IfNotPresent"
    stage_service_account: str | None = None
    resources: dict[str, dict] = field(default_factory=dict)  # stage or target -> resources block
    max_running_trials: int = 4
    trainer_secrets: list[str] = field(default_factory=list)  # Secrets the train pods get as environment (SMTP login)
    stage_retries: int = 3  # restarts of a stage pod that was killed (OOM, SIGKILL); it resumes from its checkpoint
    reconcile_interval: float = 5.0  # seconds between two reconciliations of an Experiment


def child_name(*parts: str) -> str:
    """A DNS-1123 label from parts, shortened with a hash when longer than 63 characters."""
    name = "-".join(parts).lower()
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def trial_dir(settings: ClusterSettings, namespace: str, experiment: str, trial: str) -> Path:
    return settings.artifacts_root / namespace / experiment / trial


def image_name(service: str) -> str:
    """The image `make images` builds for a service by default (the chart's values name the same)."""
    return f"docker.io/fpgaflow/{service}:{__version__}"


def labels(experiment: str, trial: str, **extra: str) -> dict[str, str]:
    base = {"app.kubernetes.io/part-of": "fpgaflow", "app.kubernetes.io/managed-by": "fpgaflow-operator",
            LABEL_EXPERIMENT: experiment, LABEL_TRIAL: trial}
    base.update({f"{GROUP}/{k}": v for k, v in extra.items()})
    return base


def _volumes(settings: ClusterSettings) -> tuple[list[dict], list[dict]]:
    """The artifacts volume, and /tmp: the images run with a read-only root file system."""
    volumes = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": settings.artifacts_claim}},
               {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "artifacts", "mountPath": str(settings.artifacts_root)}, {"name": "tmp", "mountPath": "/tmp"}]
    return volumes, mounts


def _pod_security() -> tuple[dict, dict]:
    pod = {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
    return pod, container


# Exit codes of a stage that failed on purpose (it wrote error.json: a bad spec, a diagnosed run, a
# refused precondition): running it again gives the same answer, so the Job fails at once.
STAGE_FAILURE_EXIT_CODES = (1, 2, 3)


def stage_job(settings: ClusterSettings, namespace: str, experiment: str, trial: str, stage: str) -> dict:
    """A Job that runs one stage command on the trial folder. A pod killed from outside (OOM, SIGKILL,
    a lost node) is retried up to ``stage_retries`` times and the stage resumes from its checkpoint; a
    disruption (eviction, preemption) does not count; a stage that failed on purpose is not retried."""
    volumes, mounts = _volumes(settings)
    pod_security, container_security = _pod_security()
    folder = trial_dir(settings, namespace, experiment, trial)
    container: dict[str, Any] = {
        "name": stage,
        "image": settings.images[stage],
        "imagePullPolicy": settings.image_pull_policy,
        "args": [stage, "--trial-dir", str(folder)],
        "volumeMounts": mounts,
        "securityContext": container_security,
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}],
    }
    template_metadata: dict = {"labels": labels(experiment, trial, stage=stage)}
    if stage == "train":  # live training metrics for the dashboards
        container["args"] += ["--metrics-host", "0.0.0.0", "--metrics-port", str(METRICS_PORT),
                              "--metrics-linger", str(METRICS_LINGER_S)]
        container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
        template_metadata["annotations"] = dict(SCRAPE_ANNOTATIONS)
        if settings.trainer_secrets:  # notification credentials, named by the spec's usernameEnv/passwordEnv
            container["envFrom"] = [{"secretRef": {"name": name}} for name in settings.trainer_secrets]
    if stage in settings.resources:
        container["resources"] = settings.resources[stage]
    pod_spec = {"restartPolicy": "Never", "containers": [container], "volumes": volumes, "securityContext": pod_security}
    if settings.stage_service_account:
        pod_spec["serviceAccountName"] = settings.stage_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": child_name(experiment, trial, stage), "namespace": namespace,
                     "labels": labels(experiment, trial, stage=stage)},
        "spec": {
            "backoffLimit": settings.stage_retries,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob",
                 "onExitCodes": {"containerName": stage, "operator": "In", "values": list(STAGE_FAILURE_EXIT_CODES)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def server_deployment(settings: ClusterSettings, namespace: str, experiment: str, trial: str, target: str) -> dict:
    volumes, mounts = _volumes(settings)
    pod_security, container_security = _pod_security()
    folder = trial_dir(settings, namespace, experiment, trial)
    selector = labels(experiment, trial, target=target)
    container: dict[str, Any] = {
        "name": "server",
        "image": settings.gpu_image if target == "gpu" else settings.images["serve"],
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["serve", "--trial-dir", str(folder), "--target", target, "--host", "0.0.0.0",
                 "--port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT)],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "metrics", "containerPort": METRICS_PORT}],
        "readinessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/metrics", "port": METRICS_PORT}, "periodSeconds": 20, "initialDelaySeconds": 60},
        "volumeMounts": mounts,
        "securityContext": container_security,
    }
    resources = dict(settings.resources.get(target, {}))
    if target == "gpu":
        resources.setdefault("limits", {})["nvidia.com/gpu"] = 1
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": child_name(experiment, trial, target), "namespace": namespace, "labels": selector},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector,
                             "annotations": dict(SCRAPE_ANNOTATIONS)},
                "spec": {"containers": [container], "volumes": volumes, "securityContext": pod_security,
                         # the server drains for up to its --grace-seconds (30) after SIGTERM, then exits
                         "terminationGracePeriodSeconds": SERVER_TERMINATION_GRACE_S},
            },
        },
    }


def server_service(namespace: str, experiment: str, trial: str, target: str) -> dict:
    selector = labels(experiment, trial, target=target)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_name(experiment, trial, target),
            "namespace": namespace,
            "labels": selector,
            "annotations": dict(SCRAPE_ANNOTATIONS),
        },
        "spec": {
            "selector": selector,
            "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}],
        },
    }


def service_address(namespace: str, experiment: str, trial: str, target: str) -> str:
    return f"{child_name(experiment, trial, target)}.{namespace}.svc:{GRPC_PORT}"
