"""The train stage as users run it (`fpgaflow train`): preconditions, notifications, train.command."""

from __future__ import annotations

import json
from email import message_from_bytes, policy

import pytest

from fpgaflow.spec import ExperimentSpec
from fpgaflow.tracking import validate_history
from fpgaflow.trial import TrialDir
from tests.conftest import fpgaflow
from tests.service.test_notify import smtp, webhook  # noqa: F401  (fixtures: a real SMTP server, an HTTP receiver)
from tests.unit.test_tracking import SCRIPT

pytestmark = pytest.mark.slow

TINY = {"dataset": {"name": "jets", "samples": 4000, "seed": 9}, "model": {"layers": [16]}, "train": {"epochs": 2, "batchSize": 256}}


def _trial(tmp_path, spec: dict) -> TrialDir:
    return TrialDir.create(tmp_path / "t000", "stage", "t000", {}, ExperimentSpec.model_validate(spec))


def test_a_precondition_refusal_names_each_shortfall_and_trains_nothing(tmp_path):
    td = _trial(tmp_path, {**TINY, "preconditions": {"minFreeDisk": "1000Ti", "minFreeMemory": "100Ti"}})
    done = fpgaflow("train", "--trial-dir", str(td.root), check=False)
    assert done.returncode != 0
    error = td.error("train")
    assert error["reason"] == "PreconditionFailed", error
    assert "preconditions.minFreeDisk" in error["message"] and "preconditions.minFreeMemory" in error["message"]
    assert "1000 TiB" in error["message"], "the message says what was asked"
    assert not (td.root / "train" / "history.json").exists(), "nothing was trained"
    assert json.loads((td.root / "train" / "host.json").read_text())["memory_bytes"]["total"] > 0, "the host facts are kept"


def test_a_run_estimated_to_take_longer_than_max_duration_is_refused(tmp_path):
    spec = {**TINY, "dataset": {**TINY["dataset"], "samples": 20000}, "train": {"epochs": 500, "batchSize": 64},
            "preconditions": {"maxDuration": "5s"}}
    td = _trial(tmp_path, spec)
    fpgaflow("train", "--trial-dir", str(td.root), check=False)
    error = td.error("train")
    assert error["reason"] == "PreconditionFailed" and "preconditions.maxDuration" in error["message"], error
    assert not (td.root / "train" / "history.json").exists()


def test_a_finished_run_is_announced_by_email_and_webhook(tmp_path, smtp, webhook):  # noqa: F811
    notify = {"on": ["Succeeded"], "email": {"to": ["ada@example.org"], "smtpHost": "127.0.0.1", "smtpPort": smtp.port},
              "webhook": {"url": f"http://127.0.0.1:{webhook.server_port}/hook"}}
    td = _trial(tmp_path, {**TINY, "notify": notify})
    fpgaflow("train", "--trial-dir", str(td.root))
    accuracy = td.result("train")["accuracy"]
    [envelope] = smtp.envelopes
    mail = message_from_bytes(envelope.content, policy=policy.default)
    assert mail["Subject"] == "fpgaflow: stage/t000 training Succeeded"
    assert f"{accuracy:.4f}" in mail.get_body(("plain",)).get_content()
    [png] = [part for part in mail.iter_attachments() if part.get_content_type() == "image/png"]
    assert png.get_content().startswith(b"\x89PNG"), "training.png rides along"
    [hook] = webhook.received
    assert "Succeeded" in hook["json"]["text"] and hook["json"]["fpgaflow"]["event"] == "Succeeded"


def test_train_command_runs_a_plain_python_script_as_the_stage(tmp_path):
    script = tmp_path / "logreg.py"
    script.write_text(SCRIPT)
    td = _trial(tmp_path, {"train": {"epochs": 4, "learningRate": 0.5, "command": ["python", str(script)]}})
    done = fpgaflow("train", "--trial-dir", str(td.root))
    assert done.stdout.count("LOGGED") == 4, "the script's output is streamed"
    result = td.result("train")
    assert result["epochs"] == 4 and result["accuracy"] > 0.6
    history = json.loads((td.root / "train" / "history.json").read_text())
    assert validate_history(history) == [] and [row["epoch"] for row in history["epochs"]] == [1, 2, 3, 4]
    assert (td.root / "train" / "git.json").exists(), "provenance is recorded for any framework"


def test_a_script_without_a_keras_model_ends_its_trial_after_training(tmp_path):
    from fpgaflow.report import trial_summary

    script = tmp_path / "logreg.py"
    script.write_text(SCRIPT)
    manifest = tmp_path / "script.yaml"
    manifest.write_text(json.dumps({"apiVersion": "fpgaflow.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "script"},
                                    "spec": {"train": {"epochs": 3, "learningRate": 0.5, "command": ["python", str(script)]}}}))
    done = fpgaflow("run", str(manifest), "--home", str(tmp_path / "home"))
    assert "t00: trained by train.command without a Keras model" in done.stdout
    td = TrialDir(tmp_path / "home" / "experiments" / "script" / "t00")
    summary = trial_summary(td)
    assert summary["phase"] == "Succeeded" and summary["stages"] == ["train"], summary
    assert summary["accuracy"]["float"] == td.result("train")["accuracy"] and not td.stage_dir("convert").exists()
    report = (tmp_path / "home" / "experiments" / "script" / "report.md").read_text()
    assert "t00/train/training.png" in report and "latency.png" not in report
