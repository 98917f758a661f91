"""Kopf handlers: thin. They gather observations, call the pure functions, and apply the result.

Run with ``kopf run --standalone -m fpgaflow_operator.handlers --namespace NS``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from fpgaflow.errors import SpecError, StaleResult
from fpgaflow.plan import Trial, plan_trials
from fpgaflow.spec import API_VERSION, Experiment, parse_experiment
from fpgaflow.summary import trial_summary
from fpgaflow.trial import RUN_STAGES, TrialDir, write_json
from fpgaflow_operator.manifests import (
    LABEL_EXPERIMENT,
    LABEL_STAGE,
    LABEL_TARGET,
    LABEL_TRIAL,
    ClusterSettings,
    server_deployment,
    server_service,
    service_address,
    stage_job,
    trial_dir,
)
from fpgaflow_operator.reconcile import Decision, TrialObservation, best_trial, reconcile

GROUP, VERSION = API_VERSION.split("/")
INTERVAL = float(os.environ.get("FPGAFLOW_RECONCILE_INTERVAL", "5"))


def settings_from_env(env: dict[str, str] = os.environ) -> ClusterSettings:
    """The chart's values arrive as environment variables; this is the one place that reads them."""
    defaults = ClusterSettings()
    images = dict(defaults.images)
    for stage, key in (("train", "TRAINER"), ("convert", "CONVERTER"), ("serve", "INFERENCE"), ("bench", "INFERENCE")):
        images[stage] = env.get(f"FPGAFLOW_IMAGE_{key}", images[stage])
    return ClusterSettings(
        artifacts_root=Path(env.get("FPGAFLOW_ARTIFACTS_ROOT", str(defaults.artifacts_root))),
        artifacts_claim=env.get("FPGAFLOW_ARTIFACTS_CLAIM", defaults.artifacts_claim),
        images=images,
        image_pull_policy=env.get("FPGAFLOW_IMAGE_PULL_POLICY", defaults.image_pull_policy),
        resources=json.loads(env.get("FPGAFLOW_STAGE_RESOURCES", "{}")),
        max_running_trials=int(env.get("FPGAFLOW_MAX_RUNNING_TRIALS", defaults.max_running_trials)),
        stage_retries=int(env.get("FPGAFLOW_STAGE_RETRIES", defaults.stage_retries)),
        trainer_secrets=json.loads(env.get("FPGAFLOW_TRAINER_SECRETS", "[]")),
    )


SETTINGS = settings_from_env()
# Decisions about different Experiments share the operator-wide limit on running trials: they are made
# one at a time, and each one's count is known here before its status patch reaches the API server.
_DECIDING = threading.Lock()
_RUNNING: dict[tuple[str, str], int] = {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.peering.standalone = True
    settings.posting.level = 20  # INFO and above become Kubernetes events
    # A deleted Experiment keeps Kopf's finalizer until its reconcile timer has exited; Kopf looks again
    # only every 60 s by default, so a deletion during a reconciliation would hang for a minute.
    settings.background.cancellation_polling = 1
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": _now()}


def _with_condition(body, condition: dict) -> list[dict] | None:
    """The status conditions with ``condition`` set (by type); None when it is already there as is."""
    conditions = list((body.get("status") or {}).get("conditions") or [])
    for existing in conditions:
        if existing["type"] == condition["type"]:
            if (existing["status"], existing["reason"]) == (condition["status"], condition["reason"]):
                return None
            conditions.remove(existing)
            break
    return [*conditions, condition]


def _experiment(body) -> Experiment:
    return parse_experiment({"apiVersion": body["apiVersion"], "kind": body["kind"],
                             "metadata": {"name": body["metadata"]["name"]}, "spec": dict(body.get("spec") or {})},
                            source=f"Experiment {body['metadata']['name']}")


@kopf.on.create(GROUP, VERSION, "experiments")
@kopf.on.resume(GROUP, VERSION, "experiments")
@kopf.on.update(GROUP, VERSION, "experiments", field="spec")
def validate(body, patch, logger, **_) -> None:
    try:
        experiment = _experiment(body)
        trials = plan_trials(experiment.spec)
    except SpecError as exc:
        patch.status["phase"] = "Failed"
        patch.status["conditions"] = [_condition("Validated", False, exc.reason, str(exc))]
        kopf.warn(body, reason=exc.reason, message=str(exc))
        return
    patch.status["conditions"] = [_condition("Validated", True, "Valid", f"{len(trials)} trial(s) planned")]
    if not (body.get("status") or {}).get("phase"):
        patch.status["phase"] = "Pending"
        patch.status["trialsSummary"] = f"0/{len(trials)}"
    logger.info(f"valid, {len(trials)} trial(s)")


# ----------------------------------------------------------------------------------- observation


def _job_state(job) -> str:
    status = job.status
    if status and (status.succeeded or 0) > 0:
        return "succeeded"
    if status and (status.failed or 0) > 0:
        return "failed"
    return "active"


def observe(namespace: str, name: str, trials: list[Trial]) -> dict[str, TrialObservation]:
    """The Experiment's children, grouped by trial, and what each trial folder says (it exists by now)."""
    selector = f"{LABEL_EXPERIMENT}={name}"
    jobs: dict[str, dict[str, str]] = {}
    servers: dict[str, dict[str, bool]] = {}
    for job in kubernetes.client.BatchV1Api().list_namespaced_job(namespace, label_selector=selector).items:
        labels = job.metadata.labels or {}
        jobs.setdefault(labels.get(LABEL_TRIAL), {})[labels.get(LABEL_STAGE)] = _job_state(job)
    for dep in kubernetes.client.AppsV1Api().list_namespaced_deployment(namespace, label_selector=selector).items:
        labels = dep.metadata.labels or {}
        ready = bool(dep.status and (dep.status.available_replicas or 0) > 0)
        servers.setdefault(labels.get(LABEL_TRIAL), {})[labels.get(LABEL_TARGET)] = ready
    observed = {}
    for trial in trials:
        td = TrialDir(trial_dir(SETTINGS, namespace, name, trial.name))
        observed[trial.name] = TrialObservation(
            jobs=jobs.get(trial.name, {}),
            servers=servers.get(trial.name, {}),
            done=frozenset(s for s in RUN_STAGES if td.done(s)),
            errors={s: e for s in RUN_STAGES if (e := td.error(s))},
            summary=trial_summary(td),
        )
    return observed


def gpu_available() -> bool:
    try:
        nodes = kubernetes.client.CoreV1Api().list_node().items
    except ApiException:
        return False
    return any(int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) > 0 for n in nodes if n.status)


def running_elsewhere(namespace: str, name: str) -> int:
    """Trials running in the other Experiments: as last decided here, else (after a restart) their status."""
    items = kubernetes.client.CustomObjectsApi().list_namespaced_custom_object(GROUP, VERSION, namespace, "experiments")["items"]
    return sum(
        _RUNNING.get((namespace, e["metadata"]["name"]), int((e.get("status") or {}).get("runningTrials") or 0))
        for e in items
        if e["metadata"]["name"] != name
    )


# ----------------------------------------------------------------------------------- actions


def _create(body, manifest: dict, logger) -> None:
    kopf.adopt(manifest, owner=body)
    kind = manifest["kind"]
    namespace = manifest["metadata"]["namespace"]
    api = {
        "Job": lambda: kubernetes.client.BatchV1Api().create_namespaced_job(namespace, manifest),
        "Deployment": lambda: kubernetes.client.AppsV1Api().create_namespaced_deployment(namespace, manifest),
        "Service": lambda: kubernetes.client.CoreV1Api().create_namespaced_service(namespace, manifest),
    }[kind]
    try:
        api()
        logger.info(f"created {kind} {manifest['metadata']['name']}")
    except ApiException as exc:
        if exc.status != 409:  # already there: a restarted operator deciding again
            raise kopf.TemporaryError(f"cannot create {kind} {manifest['metadata']['name']}: {exc.reason}", delay=10) from exc


def apply(body, namespace: str, name: str, decision: Decision, logger) -> None:
    for action in decision.actions:
        if action.kind == "job":
            _create(body, stage_job(SETTINGS, namespace, name, action.trial, action.name), logger)
        elif action.kind == "server":
            _create(body, server_deployment(SETTINGS, namespace, name, action.trial, action.name), logger)
            _create(body, server_service(namespace, name, action.trial, action.name), logger)
        elif action.kind == "endpoints":
            endpoints = {t: {"status": "ready", "address": service_address(namespace, name, action.trial, t)}
                         for t in action.detail["targets"]}
            endpoints.update({t: {"status": "unavailable", "reason": r} for t, r in action.detail["unavailable"].items()})
            td = TrialDir(trial_dir(SETTINGS, namespace, name, action.trial))
            write_json(td.stage_dir("serve") / "endpoints.json", endpoints)


@kopf.timer(GROUP, VERSION, "experiments", interval=INTERVAL, initial_delay=0.5)
def reconcile_experiment(body, name, namespace, patch, logger, **_) -> None:
    try:
        experiment = _experiment(body)
        trials = plan_trials(experiment.spec)
    except SpecError:
        return  # validate() has said why; nothing runs
    try:
        for trial in trials:
            TrialDir.create(trial_dir(SETTINGS, namespace, name, trial.name), name, trial.name, trial.parameters, trial.spec)
    except StaleResult as exc:
        # The spec was edited after its trials started: their results belong to the old spec and are kept.
        conditions = _with_condition(body, _condition(
            "Reconciled", False, exc.reason,
            f"the spec changed after its trials started ({exc}); nothing more runs for it: "
            "create a new Experiment for the new spec, or delete this one and apply it again"))
        if conditions is not None:
            patch.status["conditions"] = conditions
            kopf.warn(body, reason=exc.reason, message=conditions[-1]["message"])
        return
    parallel = experiment.spec.sweep.parallel_trials if experiment.spec.sweep else 1
    with _DECIDING:
        decision = reconcile(trials, observe(namespace, name, trials), parallel, running_elsewhere(namespace, name),
                             SETTINGS.max_running_trials, gpu_available())
        apply(body, namespace, name, decision, logger)
        _RUNNING[(namespace, name)] = decision.running
    best, accuracy = best_trial(decision.trials)
    finished = sum(t["phase"] in ("Succeeded", "Failed") for t in decision.trials)
    previous = (body.get("status") or {}).get("phase")
    patch.status.update({
        "phase": decision.phase,
        "trials": decision.trials,
        "trialsSummary": f"{finished}/{len(trials)}",
        "runningTrials": decision.running,
        "bestTrial": best,
        "bestAccuracy": accuracy,
    })
    if decision.phase != previous:
        logger.info(f"phase {previous or 'Pending'} -> {decision.phase}")


@kopf.on.delete(GROUP, VERSION, "experiments", optional=True)
def forget(name, namespace, **_) -> None:
    """Kubernetes' garbage collector deletes the owned children; the trial folders stay on the volume."""
    _RUNNING.pop((namespace, name), None)
