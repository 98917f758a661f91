import json

from fpgaflow.errors import FidelityError
from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import TrialDir, run_stage


def make_trial(tmp_path):
    return TrialDir.create(tmp_path / "t00", "exp", "t00", {}, ExperimentSpec())


def test_a_finished_stage_is_skipped_not_overwritten(tmp_path, capsys):
    trial = make_trial(tmp_path)
    calls = []

    def work(td, out):
        calls.append(out)
        return {"value": len(calls)}

    assert run_stage("train", trial.root, work) == 0
    assert run_stage("train", trial.root, work) == 0
    assert len(calls) == 1
    assert trial.result("train") == {"value": 1}
    assert "already done" in capsys.readouterr().out
    assert run_stage("train", trial.root, work, force=True) == 0
    assert trial.result("train") == {"value": 2}


def test_a_failure_writes_error_json_and_one_line(tmp_path, capsys):
    trial = make_trial(tmp_path)

    def work(td, out):
        raise FidelityError("agreement 50% below 98%")

    assert run_stage("convert", trial.root, work) == 1
    assert trial.error("convert") == {"stage": "convert", "reason": "FidelityCheckFailed", "message": "agreement 50% below 98%"}
    assert not trial.done("convert")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["convert failed (FidelityCheckFailed): agreement 50% below 98%"]


def test_a_missing_spec_is_reported(tmp_path):
    assert run_stage("train", tmp_path / "nothing", lambda td, out: {}) == 1
    error = json.loads((tmp_path / "nothing" / "train" / "error.json").read_text())
    assert error["reason"] == "MissingArtifact" and "spec.json" in error["message"]


def test_recreating_a_trial_with_another_spec_is_refused(tmp_path):
    make_trial(tmp_path)
    try:
        TrialDir.create(tmp_path / "t00", "exp", "t00", {}, ExperimentSpec(train={"epochs": 2}))
    except Exception as exc:
        assert "different spec" in str(exc)
    else:
        raise AssertionError("a different spec silently reused a finished trial")
