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
    from fpgaflow.summary import trial_summary

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


def test_a_cnn_trains_on_mnist_idx_files_through_the_stage(tmp_path):
    import gzip

    import numpy as np

    from tests.unit.test_readers import idx_bytes

    rng = np.random.default_rng(0)

    def images(labels):  # digit k lights a 6x6 block at its own place: learnable in a few epochs
        x = rng.integers(0, 60, (len(labels), 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            row, col = divmod(int(k), 4)
            x[i, 2 + 8 * row:8 + 8 * row, 2 + 6 * col:8 + 6 * col] = 250
        return x

    folder = tmp_path / "mnist"
    folder.mkdir()
    for part, n in (("train", 600), ("t10k", 200)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images(labels))))
        (folder / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    td = _trial(tmp_path, {"dataset": {"name": "mnist", "path": str(folder)},
                           "model": {"type": "cnn", "filters": [4, 8], "layers": [16], "l1": 0.0},
                           "train": {"epochs": 4, "batchSize": 32, "learningRate": 0.003}})
    fpgaflow("train", "--trial-dir", str(td.root))
    result = td.result("train")
    assert result["dataset"]["format"] == "idx" and result["dataset"]["shape"] == [28, 28, 1]
    assert result["dataset"]["train"] == 600 and result["dataset"]["test"] == 200, "the files' own split"
    assert result["accuracy"] > 0.6, "well above chance (0.1)"
    with np.load(td.root / "train" / "testset.npz") as testset:
        assert testset["x"].shape == (200, 28, 28, 1), "test samples in the shape the model takes"
    assert (td.root / "train" / "training.png").exists()
