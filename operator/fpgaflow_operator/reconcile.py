"""The operator's decisions, as a pure function of what it observes.

``reconcile(...)`` takes the Experiment's trials, what exists in the cluster (Jobs, Deployments) and
what the trial folders say (results, errors), and returns what to create and the status to write. The
handler only gathers the observations and applies the result, so a restarted operator makes the same
decisions again: children have deterministic names and nothing is created twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fpgaflow.plan import Trial
from fpgaflow.spec import modelled_distance
from fpgaflow.trial import BUILD_STAGES, RUN_STAGES

JobState = Literal["active", "succeeded", "failed"]
Problem = tuple[str, str]  # (reason, message) of a pod that should run and does not (observations.pod_problem)


@dataclass(frozen=True)
class TrialObservation:
    """What the cluster and the trial folder say about one trial."""

    jobs: dict[str, JobState] = field(default_factory=dict)  # stage -> state of its Job
    job_failures: dict[str, str] = field(default_factory=dict)  # stage -> why its Job failed (the controller's reason)
    problems: dict[str, Problem] = field(default_factory=dict)  # stage or target -> what keeps its pod from running
    servers: dict[str, bool] = field(default_factory=dict)  # target -> Deployment ready
    done: frozenset[str] = frozenset()  # stages whose result.json exists
    errors: dict[str, dict] = field(default_factory=dict)  # stage -> error.json
    summary: dict = field(default_factory=dict)  # fpgaflow.summary.trial_summary of the folder


@dataclass(frozen=True)
class Action:
    kind: Literal["job", "server", "endpoints"]
    trial: str
    name: str  # stage for jobs, target for servers
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    actions: list[Action]
    trials: list[dict]  # status.trials
    phase: str
    running: int


def _trial_state(trial: Trial, obs: TrialObservation, gpu_available: bool) -> tuple[str, str | None, list[Action], dict]:
    """(phase, stage, actions, extra status) of one trial that is allowed to run. A running trial whose pods
    cannot run (not schedulable, no image, crashing) says which and why in its reason and message."""
    phase, stage, actions, extra = _trial_progress(trial, obs, gpu_available)
    if phase == "Running":
        waiting = [(name, problem) for name, problem in obs.problems.items()
                   if name == stage or (stage in ("serve", "bench") and name in trial.spec.serve.targets)]
        if waiting:
            name, (reason, message) = sorted(waiting)[0]
            extra = {**extra, "reason": reason, "message": f"{name}: {message}"}
    return phase, stage, actions, extra


def _trial_progress(trial: Trial, obs: TrialObservation, gpu_available: bool) -> tuple[str, str | None, list[Action], dict]:
    for stage in RUN_STAGES:
        if stage in obs.errors:
            err = obs.errors[stage]
            return "Failed", stage, [], {"reason": err.get("reason", "StageFailed"), "message": err.get("message", "")}
        if obs.jobs.get(stage) == "failed" and stage not in obs.done:
            why = obs.job_failures.get(stage) or "no reason given"
            return "Failed", stage, [], {"reason": "JobFailed", "message": f"the {stage} Job failed ({why}); "
                                                                          "its pods left no reason in the trial folder"}
    if obs.summary.get("stages") == ["train"] and "train" in obs.done:  # a train.command that trains only
        return "Succeeded", None, [], {"message": obs.summary.get("note", "")}
    for stage in BUILD_STAGES:
        if stage not in obs.done:
            actions = [] if stage in obs.jobs else [Action("job", trial.name, stage)]
            return "Running", stage, actions, {}
    targets = list(trial.spec.serve.targets)
    unavailable = {"gpu": "no node offers nvidia.com/gpu"} if "gpu" in targets and not gpu_available else {}
    if "bench" in obs.done:
        return "Succeeded", None, [], {"unavailable": unavailable}
    wanted = [t for t in targets if t not in unavailable]
    actions = [Action("server", trial.name, t) for t in wanted if t not in obs.servers]
    if actions or not all(obs.servers.get(t) for t in wanted):
        return "Running", "serve", actions, {"unavailable": unavailable}
    if "bench" in obs.jobs:
        return "Running", "bench", [], {"unavailable": unavailable}
    endpoints = Action("endpoints", trial.name, "serve", {"targets": wanted, "unavailable": unavailable})
    return "Running", "bench", [endpoints, Action("job", trial.name, "bench")], {"unavailable": unavailable}


def reconcile(
    trials: list[Trial],
    observed: dict[str, TrialObservation],
    parallel_trials: int,
    running_elsewhere: int,
    max_running_trials: int,
    gpu_available: bool,
) -> Decision:
    """Decide the next actions and the status for one Experiment."""
    actions: list[Action] = []
    statuses: list[dict] = []
    running = 0
    for trial in trials:
        obs = observed.get(trial.name, TrialObservation())
        started = bool(obs.jobs or obs.servers or obs.done or obs.errors)
        if not started:
            if running >= parallel_trials or running + running_elsewhere >= max_running_trials:
                statuses.append(_status(trial, "Queued", None, obs, {}))
                continue
        phase, stage, trial_actions, extra = _trial_state(trial, obs, gpu_available)
        if phase == "Running":
            running += 1
        actions.extend(trial_actions)
        statuses.append(_status(trial, phase, stage, obs, extra))
    phases = {s["phase"] for s in statuses}
    if phases <= {"Succeeded"}:
        phase = "Succeeded"
    elif phases <= {"Succeeded", "Failed"}:
        phase = "Failed"
    elif "Running" in phases:
        phase = "Running"
    else:
        phase = "Queued"
    return Decision(actions, statuses, phase, running)


def _status(trial: Trial, phase: str, stage: str | None, obs: TrialObservation, extra: dict) -> dict:
    summary = obs.summary or {}
    status = {"name": trial.name, "parameters": {k: str(v) for k, v in trial.parameters.items()}, "phase": phase,
              "stage": stage, "accuracy": summary.get("accuracy") or {}}
    bench = summary.get("benchmark") or {}
    endpoints = {t: i["address"] for t, i in (bench.get("targets") or {}).items() if i.get("status") == "ready"}
    if endpoints:
        status["endpoints"] = endpoints
    if bench:
        status["benchmark"] = {
            # a run from a modelled distance (benchmark.networks) keyed apart from the direct one: cpu@1/remote
            f"{r['target']}@{r['concurrency']}" + (f"/{r.get('network')}" if modelled_distance(r.get("rtt_ms"), r.get("bandwidth_mbps")) else ""):
            {"p50Ms": r.get("p50_ms"), "p99Ms": r.get("p99_ms"), "throughputRps": r["throughput_rps"]}
            for r in bench.get("runs", [])
        }
    status.update({k: v for k, v in extra.items() if v})
    return status


def best_trial(statuses: list[dict]) -> tuple[str | None, float | None]:
    scored = [(s["accuracy"].get("emulated"), s["name"]) for s in statuses if s["phase"] == "Succeeded" and s["accuracy"].get("emulated") is not None]
    if not scored:
        return None, None
    accuracy, name = max(scored)
    return name, accuracy
