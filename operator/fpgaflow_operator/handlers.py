"""Kopf handlers: thin. They gather observations, call the pure functions, and apply the result.

Run with ``kopf run --standalone -m fpgaflow_operator.handlers --namespace NS``.

Importing this module reads nothing. The startup handler ``configure`` reads the environment once into
``memo.settings`` (a frozen ``ClusterSettings``) and registers the reconcile timer with the interval
found there. What exists in the cluster comes from Kopf's indexes, which Kopf keeps up to date from its
watch streams: ``stage_jobs`` and ``trial_servers`` (a trial's Jobs and Deployments) and
``stuck_pods`` (a trial's pods that cannot run, and why), ``running_trials`` (each Experiment's
``status.runningTrials``, for the operator-wide limit).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kopf
import kubernetes
from kubernetes.client import V1Deployment, V1Job, V1Service
from kubernetes.client.rest import ApiException

from fpgaflow.errors import SpecError, StaleResult
from fpgaflow.plan import Trial, plan_trials
from fpgaflow.spec import (
    API_VERSION,
    GROUP,
    LABEL_EXPERIMENT,
    LABEL_STAGE,
    LABEL_TARGET,
    LABEL_TRIAL,
    Experiment,
    parse_experiment,
)
from fpgaflow.summary import trial_summary
from fpgaflow.trial import RUN_STAGES, STAGE_SERVICE, TrialDir, write_json
from fpgaflow_operator.manifests import (
    ClusterSettings,
    server_deployment,
    server_service,
    service_address,
    stage_job,
    trial_dir,
)
from fpgaflow_operator.observations import job_state, pod_problem
from fpgaflow_operator.reconcile import Decision, JobState, Problem, TrialObservation, best_trial, reconcile

VERSION = API_VERSION.split("/")[1]

# The indexes' keys and values: a trial's children are found under (namespace, experiment, trial).
TrialKey = tuple[str, str, str]
JobIndex = kopf.Index[TrialKey, tuple[str, JobState, str]]  # -> (stage, state, why failed) of each of its Jobs
PodIndex = kopf.Index[TrialKey, tuple[str, Problem]]  # -> (stage or target, problem) of each pod that cannot run
ServerIndex = kopf.Index[TrialKey, tuple[str, bool]]  # -> (target, available) of each of its Deployments
RunningIndex = kopf.Index[str, tuple[str, int]]  # namespace -> (Experiment, status.runningTrials)

_T = TypeVar("_T")
_Model = TypeVar("_Model", V1Job, V1Deployment, V1Service)


def settings_from_env(env: Mapping[str, str]) -> ClusterSettings:
    """The chart's values arrive as environment variables; this is the one place that reads them."""
    defaults = ClusterSettings()
    images = dict(defaults.images)
    for stage, service in STAGE_SERVICE.items():
        images[stage] = env.get(f"FPGAFLOW_IMAGE_{service.upper()}", images[stage])
    return ClusterSettings(
        artifacts_root=Path(env.get("FPGAFLOW_ARTIFACTS_ROOT", str(defaults.artifacts_root))),
        artifacts_claim=env.get("FPGAFLOW_ARTIFACTS_CLAIM", defaults.artifacts_claim),
        images=images,
        gpu_image=env.get("FPGAFLOW_IMAGE_INFERENCE_GPU", defaults.gpu_image),
        image_pull_policy=env.get("FPGAFLOW_IMAGE_PULL_POLICY", defaults.image_pull_policy),
        resources=json.loads(env.get("FPGAFLOW_STAGE_RESOURCES", "{}")),
        max_running_trials=int(env.get("FPGAFLOW_MAX_RUNNING_TRIALS", defaults.max_running_trials)),
        stage_retries=int(env.get("FPGAFLOW_STAGE_RETRIES", defaults.stage_retries)),
        trainer_secrets=json.loads(env.get("FPGAFLOW_TRAINER_SECRETS", "[]")),
        reconcile_interval=float(env.get("FPGAFLOW_RECONCILE_INTERVAL", defaults.reconcile_interval)),
    )


@dataclass
class Decisions:
    """Trials running per Experiment, as last decided here (``memo.decisions``, shared by all Experiments).

    Decisions about different Experiments share the operator-wide limit on running trials: they are made
    one at a time, and each one's count is known here before its status patch reaches the API server (and
    comes back through the ``running_trials`` index).
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[tuple[str, str], int] = field(default_factory=dict)  # (namespace, name) -> trials


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Kopf's settings, the operator's settings (read once, into the memo), and the reconcile timer."""
    settings.peering.standalone = True
    settings.posting.level = logging.INFO  # INFO and above become Kubernetes events
    # A deleted Experiment keeps Kopf's finalizer until its reconcile timer has exited; Kopf looks again
    # only every 60 s by default, so a deletion during a reconciliation would hang for a minute.
    settings.background.cancellation_polling = 1
    cluster = settings_from_env(os.environ)
    memo.settings = cluster
    memo.decisions = Decisions()
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    # A timer's interval is fixed when the timer is registered, and the chart sets it: it is registered
    # here, last (so that a retried startup registers it once). Kopf starts watching only after its
    # startup handlers have finished, so the timer is there before the first Experiment is seen.
    # TimerFn lists Kopf's own kwargs only, not the indexes a handler takes by name (Kopf's own example of
    # indexes, examples/16-indexing, ignores the same error).
    kopf.timer(GROUP, VERSION, "experiments", id="reconcile_experiment",
               interval=cluster.reconcile_interval, initial_delay=0.5)(reconcile_experiment)  # type: ignore[arg-type]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": _now()}


def _with_condition(body: kopf.Body, condition: dict) -> list[dict] | None:
    """The status conditions with ``condition`` set (by type); None when it is already there as is."""
    conditions = list((body.get("status") or {}).get("conditions") or [])
    for existing in conditions:
        if existing["type"] == condition["type"]:
            if (existing["status"], existing["reason"]) == (condition["status"], condition["reason"]):
                return None
            conditions.remove(existing)
            break
    return [*conditions, condition]


def _experiment(body: kopf.Body) -> Experiment:
    return parse_experiment({"apiVersion": body["apiVersion"], "kind": body["kind"],
                             "metadata": {"name": body["metadata"]["name"]}, "spec": dict(body.get("spec") or {})},
                            source=f"Experiment {body['metadata']['name']}")


def _namespace(namespace: str | None) -> str:
    if namespace is None:  # Kopf passes None for cluster-scoped objects; these are all namespaced
        raise kopf.PermanentError("expected a namespaced object")
    return namespace


@kopf.on.create(GROUP, VERSION, "experiments")
@kopf.on.resume(GROUP, VERSION, "experiments")
@kopf.on.update(GROUP, VERSION, "experiments", field="spec")
def validate(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
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


# ----------------------------------------------------------------------------------- indexes

_CHILD = {LABEL_EXPERIMENT: kopf.PRESENT, LABEL_TRIAL: kopf.PRESENT}


def _trial_key(namespace: str | None, labels: kopf.Labels) -> TrialKey:
    return _namespace(namespace), labels[LABEL_EXPERIMENT], labels[LABEL_TRIAL]


@kopf.index("batch", "v1", "jobs", labels={**_CHILD, LABEL_STAGE: kopf.PRESENT})
def stage_jobs(namespace: str | None, labels: kopf.Labels, status: kopf.Status,
               **_: Any) -> dict[TrialKey, tuple[str, JobState, str]]:
    """Each stage Job: its stage and state (and why it failed), under its trial."""
    return {_trial_key(namespace, labels): (labels[LABEL_STAGE], *job_state(status))}


@kopf.index("apps", "v1", "deployments", labels={**_CHILD, LABEL_TARGET: kopf.PRESENT})
def trial_servers(namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                  **_: Any) -> dict[TrialKey, tuple[str, bool]]:
    """Each server Deployment: its target and whether a replica is available, under its trial."""
    return {_trial_key(namespace, labels): (labels[LABEL_TARGET], (status.get("availableReplicas") or 0) > 0)}


@kopf.index("v1", "pods", labels=_CHILD)
def stuck_pods(namespace: str | None, name: str, labels: kopf.Labels, status: kopf.Status,
               **_: Any) -> dict[TrialKey, tuple[str, Problem]] | None:
    """Each stage or server pod that cannot run (unschedulable, no image, crashing), under its trial."""
    problem = pod_problem(name, status)
    part = labels.get(LABEL_STAGE) or labels.get(LABEL_TARGET)
    if problem is None or part is None:
        return None
    return {_trial_key(namespace, labels): (part, problem)}


@kopf.index(GROUP, VERSION, "experiments")
def running_trials(namespace: str | None, name: str, status: kopf.Status, **_: Any) -> dict[str, tuple[str, int]]:
    """Each Experiment's running trials as its status last said (what a restarted operator knows)."""
    return {_namespace(namespace): (name, int(status.get("runningTrials") or 0))}


def _copy(values: Iterable[_T] | None) -> list[_T]:
    """The values of an index's Store, copied. Kopf updates its indexes on its event loop while sync
    handlers run in threads, so a copy can meet a change ("changed size during iteration"): copy again."""
    while True:
        try:
            return list(values or ())
        except RuntimeError:
            continue


# ----------------------------------------------------------------------------------- observation


def observe(settings: ClusterSettings, namespace: str, name: str, trials: list[Trial],
            jobs: JobIndex, servers: ServerIndex, pods: PodIndex) -> dict[str, TrialObservation]:
    """The Experiment's children, by trial, and what each trial folder says (it exists by now)."""
    observed = {}
    for trial in trials:
        key = (namespace, name, trial.name)
        td = TrialDir(trial_dir(settings, namespace, name, trial.name))
        trial_jobs = _copy(jobs.get(key))
        observed[trial.name] = TrialObservation(
            jobs={stage: state for stage, state, _ in trial_jobs},
            job_failures={stage: why for stage, state, why in trial_jobs if state == "failed"},
            problems=dict(_copy(pods.get(key))),
            servers=dict(_copy(servers.get(key))),
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


def running_elsewhere(experiments: RunningIndex, decisions: Decisions, namespace: str, name: str) -> int:
    """Trials running in the other Experiments: as last decided here, else (after a restart) their status."""
    return sum(decisions.running.get((namespace, other), reported)
               for other, reported in _copy(experiments.get(namespace)) if other != name)


# ----------------------------------------------------------------------------------- actions


def _quantities_as_strings(value: Any, key: str | None = None) -> Any:
    """``value`` with the quantities of its ``resources`` blocks as strings. The API server takes a number
    (``nvidia.com/gpu: 1``); the client's ``V1ResourceRequirements`` takes only a string."""
    if isinstance(value, dict):
        if key == "resources":
            return {k: ({q: str(n) if isinstance(n, (int, float)) else n for q, n in v.items()}
                        if k in ("limits", "requests") and isinstance(v, dict) else v)
                    for k, v in value.items()}
        return {k: _quantities_as_strings(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_quantities_as_strings(v) for v in value]
    return value


def _model(model: type[_Model], manifest: dict) -> _Model:
    """The client's typed object for a manifest: the one conversion its API methods would make of a dict."""
    return model.model_validate(_quantities_as_strings(manifest))


def _create(body: kopf.Body, manifest: dict, logger: kopf.Logger) -> None:
    kopf.adopt(manifest, owner=body)
    kind = manifest["kind"]
    namespace = manifest["metadata"]["namespace"]
    try:
        if kind == "Job":
            kubernetes.client.BatchV1Api().create_namespaced_job(namespace, _model(V1Job, manifest))
        elif kind == "Deployment":
            kubernetes.client.AppsV1Api().create_namespaced_deployment(namespace, _model(V1Deployment, manifest))
        elif kind == "Service":
            kubernetes.client.CoreV1Api().create_namespaced_service(namespace, _model(V1Service, manifest))
        else:
            raise ValueError(f"no API for {kind}")
        logger.info(f"created {kind} {manifest['metadata']['name']}")
    except ApiException as exc:
        if exc.status != 409:  # already there: a restarted operator deciding again
            raise kopf.TemporaryError(f"cannot create {kind} {manifest['metadata']['name']}: {exc.reason}", delay=10) from exc


def apply(settings: ClusterSettings, body: kopf.Body, namespace: str, name: str, decision: Decision,
          logger: kopf.Logger) -> None:
    for action in decision.actions:
        if action.kind == "job":
            _create(body, stage_job(settings, namespace, name, action.trial, action.name), logger)
        elif action.kind == "server":
            _create(body, server_deployment(settings, namespace, name, action.trial, action.name), logger)
            _create(body, server_service(namespace, name, action.trial, action.name), logger)
        elif action.kind == "endpoints":
            endpoints = {t: {"status": "ready", "address": service_address(namespace, name, action.trial, t)}
                         for t in action.detail["targets"]}
            endpoints.update({t: {"status": "unavailable", "reason": r} for t, r in action.detail["unavailable"].items()})
            td = TrialDir(trial_dir(settings, namespace, name, action.trial))
            write_json(td.stage_dir("serve") / "endpoints.json", endpoints)


def reconcile_experiment(body: kopf.Body, name: str, namespace: str | None, patch: kopf.Patch, logger: kopf.Logger,
                         memo: kopf.Memo, stage_jobs: JobIndex, trial_servers: ServerIndex, stuck_pods: PodIndex,
                         running_trials: RunningIndex, **_: Any) -> None:
    """The reconcile timer (registered by ``configure``): observe, decide, create, write the status."""
    settings: ClusterSettings = memo.settings
    decisions: Decisions = memo.decisions
    namespace = _namespace(namespace)
    try:
        experiment = _experiment(body)
        trials = plan_trials(experiment.spec)
    except SpecError:
        return  # validate() has said why; nothing runs
    try:
        for trial in trials:
            TrialDir.create(trial_dir(settings, namespace, name, trial.name), name, trial.name, trial.parameters, trial.spec)
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
    with decisions.lock:
        decision = reconcile(trials, observe(settings, namespace, name, trials, stage_jobs, trial_servers, stuck_pods), parallel,
                             running_elsewhere(running_trials, decisions, namespace, name),
                             settings.max_running_trials, gpu_available())
        apply(settings, body, namespace, name, decision, logger)
        decisions.running[(namespace, name)] = decision.running
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
def forget(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Kubernetes' garbage collector deletes the owned children; the trial folders stay on the volume."""
    decisions: Decisions = memo.decisions
    decisions.running.pop((_namespace(namespace), name), None)
