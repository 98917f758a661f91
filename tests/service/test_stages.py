"""Stage commands on their own, as a Kubernetes Job runs them."""

from __future__ import annotations

import json

import pytest

from fpgaflow.spec import ExperimentSpec
from fpgaflow.tracking import validate_history
from fpgaflow.trial import TrialDir
from tests.conftest import fpgaflow

pytestmark = pytest.mark.slow


def test_train_on_the_real_digits(tmp_path):
    spec = ExperimentSpec.model_validate(
        {"dataset": {"name": "digits", "testFraction": 0.25, "seed": 7}, "model": {"layers": [32], "l1": 0.0},
         "train": {"epochs": 15, "batchSize": 64, "learningRate": 0.003}}
    )
    td = TrialDir.create(tmp_path / "t00", "digits", "t00", {}, spec)
    done = fpgaflow("train", "--trial-dir", str(td.root))
    assert "Epoch 15/15" in done.stdout
    result = td.result("train")
    assert result["dataset"]["simulated"] is False
    assert result["dataset"]["features"][:2] == ["pixel_0_0", "pixel_0_1"] and len(result["dataset"]["classes"]) == 10
    assert result["dataset"]["test"] == 450
    assert result["accuracy"] > 0.85
    history = json.loads((td.root / "train" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, 16))
    assert validate_history(history) == [], "the Keras trainer writes what fpgaflow.tracking's users write"
    row = history["epochs"][-1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds", "phase"} <= set(row)
    assert set(row["val_auc"]) == set(result["dataset"]["classes"]) and min(row["val_auc"].values()) > 0.9
    assert set(row["weight_norm"]) == {"fc1", "output"} and row["gradient_norm"] > 0
    assert row["sparsity"] == 0.0 and set(row["dead_relu_fraction"]) == {"relu1"}
    host = json.loads((td.root / "train" / "host.json").read_text())
    sampling = host["sampling"]
    assert sampling["samples"] and sampling["peak_rss_bytes"] > 0 and sampling["min_free_disk_bytes"] > 0
    assert sampling["gpu_peak_bytes"] is None if not host["gpus"] else sampling["gpu_peak_bytes"] >= 0


def test_a_stage_without_its_inputs_fails_with_one_line(tmp_path):
    td = TrialDir.create(tmp_path / "t00", "exp", "t00", {}, ExperimentSpec())
    done = fpgaflow("convert", "--trial-dir", str(td.root), check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("convert failed (MissingArtifact):")
    assert td.error("convert")["reason"] == "MissingArtifact"


def test_gpu_target_is_unavailable_not_faked(tmp_path, tiny_run):
    from fpgaflow_inference.backends import visible_gpus

    if visible_gpus():
        pytest.skip("this machine has a GPU: the gpu target is served for real")
    done = fpgaflow("serve", "--trial-dir", str(tiny_run["trial"]), "--target", "gpu", "--port", "0", check=False)
    assert done.returncode == 3
    assert "no GPU is visible" in done.stderr
    error = json.loads((tiny_run["trial"] / "serve" / "gpu" / "error.json").read_text())
    assert error["reason"] == "Unavailable"
