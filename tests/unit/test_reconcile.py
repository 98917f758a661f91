"""The operator's decisions, without a cluster."""

from fpgaflow.plan import plan_trials
from fpgaflow.spec import parse_experiment
from fpgaflow_operator.manifests import ClusterSettings, child_name, server_deployment, stage_job
from fpgaflow_operator.reconcile import TrialObservation, best_trial, reconcile


def trials(n=1, parallel=1, targets=("cpu", "gpu", "fpga")):
    sweep = {"sweep": {"parallelTrials": parallel, "parameters": {"hls.reuseFactor": list(range(1, n + 1))}}} if n > 1 else {}
    exp = parse_experiment({"metadata": {"name": "e"}, "spec": {"serve": {"targets": list(targets)}, **sweep}})
    return plan_trials(exp.spec)


def decide(ts, observed=None, parallel=1, elsewhere=0, limit=4, gpu=False):
    return reconcile(ts, observed or {}, parallel, elsewhere, limit, gpu)


def test_a_new_trial_starts_with_its_train_job():
    d = decide(trials())
    assert [(a.kind, a.trial, a.name) for a in d.actions] == [("job", "t00", "train")]
    assert d.phase == "Running" and d.trials[0]["stage"] == "train"


def test_stages_follow_each_other_and_nothing_is_created_twice():
    ts = trials()
    assert decide(ts, {"t00": TrialObservation(jobs={"train": "active"})}).actions == []
    d = decide(ts, {"t00": TrialObservation(jobs={"train": "succeeded"}, done=frozenset({"train"}))})
    assert [(a.kind, a.name) for a in d.actions] == [("job", "convert")]
    done = frozenset({"train", "convert"})
    d = decide(ts, {"t00": TrialObservation(jobs={"train": "succeeded", "convert": "succeeded"}, done=done)})
    assert [(a.kind, a.name) for a in d.actions] == [("server", "cpu"), ("server", "fpga")], "no gpu server without a GPU node"
    assert d.trials[0]["unavailable"] == {"gpu": "no node offers nvidia.com/gpu"}
    d = decide(ts, {"t00": TrialObservation(jobs={"train": "succeeded", "convert": "succeeded"}, done=done,
                                            servers={"cpu": True, "fpga": False})})
    assert d.actions == [] and d.trials[0]["stage"] == "serve"
    d = decide(ts, {"t00": TrialObservation(jobs={"train": "succeeded", "convert": "succeeded"}, done=done,
                                            servers={"cpu": True, "fpga": True})})
    assert [(a.kind, a.name) for a in d.actions] == [("endpoints", "serve"), ("job", "bench")]
    assert d.actions[0].detail == {"targets": ["cpu", "fpga"], "unavailable": {"gpu": "no node offers nvidia.com/gpu"}}


def test_a_gpu_node_gets_a_gpu_server():
    done = frozenset({"train", "convert"})
    d = decide(trials(), {"t00": TrialObservation(done=done)}, gpu=True)
    assert [a.name for a in d.actions] == ["cpu", "gpu", "fpga"]


def test_a_stage_error_fails_the_trial_with_its_reason():
    obs = TrialObservation(jobs={"train": "succeeded", "convert": "failed"}, done=frozenset({"train"}),
                           errors={"convert": {"reason": "FidelityCheckFailed", "message": "agreement 50%"}})
    d = decide(trials(), {"t00": obs})
    assert d.phase == "Failed" and d.actions == []
    assert (d.trials[0]["stage"], d.trials[0]["reason"], d.trials[0]["message"]) == ("convert", "FidelityCheckFailed", "agreement 50%")
    d = decide(trials(), {"t00": TrialObservation(jobs={"train": "failed"},
                                                  job_failures={"train": "BackoffLimitExceeded: Job has reached the specified backoff limit"})})
    assert d.trials[0]["reason"] == "JobFailed" and "BackoffLimitExceeded" in d.trials[0]["message"]


def test_a_pod_that_cannot_run_says_why_in_its_running_trial():
    problem = ("ImagePullBackOff", "pod e-t00-train-x, container train: Back-off pulling image")
    d = decide(trials(), {"t00": TrialObservation(jobs={"train": "active"}, problems={"train": problem})})
    assert (d.phase, d.trials[0]["phase"], d.trials[0]["reason"]) == ("Running", "Running", "ImagePullBackOff")
    assert d.trials[0]["message"].startswith("train: pod e-t00-train-x")
    # a server's pod while its trial is serving; a problem of another stage's leftover pod is not this stage's
    done = frozenset({"train", "convert"})
    obs = TrialObservation(jobs={"train": "succeeded", "convert": "succeeded"}, done=done, servers={"cpu": False, "fpga": True},
                           problems={"cpu": ("Unschedulable", "pod e-t00-cpu-y cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."),
                                     "train": problem})
    d = decide(trials(), {"t00": obs})
    assert (d.trials[0]["stage"], d.trials[0]["reason"]) == ("serve", "Unschedulable") and "Insufficient cpu" in d.trials[0]["message"]
    d = decide(trials(), {"t00": TrialObservation(jobs={"train": "active"})})
    assert "reason" not in d.trials[0], "no problem, no reason"


def test_parallel_trials_and_the_operator_wide_limit_queue_the_rest():
    ts = trials(n=4, parallel=2)
    d = decide(ts, parallel=2)
    assert [a.trial for a in d.actions] == ["t00", "t01"] and d.running == 2
    assert [t["phase"] for t in d.trials] == ["Running", "Running", "Queued", "Queued"] and d.phase == "Running"
    d = decide(ts, parallel=2, elsewhere=3, limit=4)
    assert [a.trial for a in d.actions] == ["t00"]
    d = decide(ts, parallel=2, elsewhere=4, limit=4)
    assert d.actions == [] and d.phase == "Queued"


def test_finished_trials_free_their_slot_and_the_best_is_named():
    ts = trials(n=3, parallel=1)
    finished = TrialObservation(done=frozenset({"train", "convert", "bench"}), summary={"accuracy": {"emulated": 0.7}})
    d = decide(ts, {"t00": finished})
    assert [t["phase"] for t in d.trials] == ["Succeeded", "Running", "Queued"]
    better = TrialObservation(done=frozenset({"train", "convert", "bench"}), summary={"accuracy": {"emulated": 0.8}})
    d = decide(ts, {"t00": finished, "t01": better, "t02": finished})
    assert d.phase == "Succeeded" and best_trial(d.trials) == ("t01", 0.8)


def test_manifests_are_labelled_mount_the_artifacts_and_ask_for_a_gpu():
    settings = ClusterSettings()
    job = stage_job(settings, "ns", "exp", "t00", "train")
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["labels"]["fpgaflow.io/experiment"] == "exp" and job["metadata"]["labels"]["fpgaflow.io/trial"] == "t00"
    assert pod["containers"][0]["args"][:3] == ["train", "--trial-dir", "/artifacts/ns/exp/t00"]
    # the trainer serves live metrics on the pod's metrics port, announced to the scraper
    assert pod["containers"][0]["args"][3:] == ["--metrics-host", "0.0.0.0", "--metrics-port", "8000", "--metrics-linger", "15"]
    assert pod["containers"][0]["ports"] == [{"name": "metrics", "containerPort": 8000}]
    assert job["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8000"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "fpgaflow-artifacts"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 3, "a killed trainer is retried and resumes"
    fail_job, ignore = job["spec"]["podFailurePolicy"]["rules"]
    assert fail_job["action"] == "FailJob" and fail_job["onExitCodes"]["values"] == [1, 2, 3], "a failed stage is final"
    assert fail_job["onExitCodes"]["containerName"] == "train"
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert "envFrom" not in pod["containers"][0]
    with_secrets = stage_job(ClusterSettings(trainer_secrets=["smtp-login"]), "ns", "exp", "t00", "train")
    assert with_secrets["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "smtp-login"}}]
    assert "envFrom" not in stage_job(ClusterSettings(trainer_secrets=["smtp-login"]), "ns", "exp", "t00", "convert")[
        "spec"]["template"]["spec"]["containers"][0], "only the trainer sends notifications"
    gpu = server_deployment(settings, "ns", "exp", "t00", "gpu")
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "resources" not in server_deployment(settings, "ns", "exp", "t00", "cpu")["spec"]["template"]["spec"]["containers"][0]


def test_child_names_are_dns_labels():
    assert child_name("exp", "t00", "train") == "exp-t00-train"
    long = child_name("x" * 40, "t00", "convert")
    assert len(long) <= 63 and long == child_name("x" * 40, "t00", "convert")


def test_chart_values_reach_the_settings_through_the_environment():
    from fpgaflow_operator.handlers import settings_from_env

    settings = settings_from_env({"FPGAFLOW_STAGE_RETRIES": "5", "FPGAFLOW_TRAINER_SECRETS": '["smtp-login"]',
                                  "FPGAFLOW_MAX_RUNNING_TRIALS": "2"})
    assert (settings.stage_retries, settings.trainer_secrets, settings.max_running_trials) == (5, ["smtp-login"], 2)
    assert settings_from_env({}) == ClusterSettings()


def test_a_trial_trained_by_a_script_without_a_keras_model_ends_after_training():
    summary = {"stages": ["train"], "note": "trained by train.command without a Keras model"}
    d = decide(trials(), {"t00": TrialObservation(jobs={"train": "succeeded"}, done=frozenset({"train"}), summary=summary)})
    assert d.actions == [] and d.phase == "Succeeded" and d.trials[0]["message"] == summary["note"]


def test_a_server_pod_is_given_longer_than_the_server_drains():
    from fpgaflow_inference.server import ServerSettings

    pod = server_deployment(ClusterSettings(), "ns", "exp", "t00", "cpu")["spec"]["template"]["spec"]
    assert "--grace-seconds" not in pod["containers"][0]["args"]
    assert pod["terminationGracePeriodSeconds"] > ServerSettings().grace_seconds


def test_a_remote_run_has_its_own_status_entry_beside_the_on_prem_one():
    ts = trials(targets=("cpu",))
    runs = [{"target": "cpu", "concurrency": 1, "network": "on-prem", "rtt_ms": 0.0, "bandwidth_mbps": None, "p50_ms": 0.5,
             "throughput_rps": 2000.0},
            {"target": "cpu", "concurrency": 1, "network": "remote", "rtt_ms": 50.0, "bandwidth_mbps": None, "p50_ms": 50.5,
             "throughput_rps": 19.8}]
    done = TrialObservation(done=frozenset({"train", "convert", "bench"}),
                            summary={"accuracy": {"emulated": 0.7}, "benchmark": {"targets": {}, "runs": runs}})
    status = decide(ts, {"t00": done}).trials[0]["benchmark"]
    assert {k: v["p50Ms"] for k, v in status.items()} == {"cpu@1": 0.5, "cpu@1/remote": 50.5}
