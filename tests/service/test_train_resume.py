"""The train stage's safety nets, end to end: resume after SIGKILL, abort on a diagnosed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, fpgaflow

pytestmark = pytest.mark.slow

SPEC = {"dataset": {"name": "jets", "samples": 20000, "seed": 5}, "model": {"layers": [32, 16]},
        "train": {"epochs": 8, "batchSize": 128}}


def _trial(root, name: str, spec: dict = SPEC):
    from fpgaflow.spec import ExperimentSpec
    from fpgaflow.trial import TrialDir

    return TrialDir.create(root / "resume" / name, "resume", name, {}, ExperimentSpec.model_validate(spec)).root


def test_a_killed_trainer_resumes_losing_at_most_one_epoch(tmp_path):
    killed, whole = _trial(tmp_path, "t00"), _trial(tmp_path, "t01")
    pointer = killed / "train" / "checkpoints" / "latest.json"
    proc = subprocess.Popen([sys.executable, "-m", "fpgaflow", "train", "--trial-dir", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (pointer.exists() and json.loads(pointer.read_text())["epoch"] >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the trainer ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    seen = len(json.loads((killed / "train" / "history.json").read_text())["epochs"])
    assert not (killed / "train" / "result.json").exists()

    done = fpgaflow("train", "--trial-dir", str(killed))
    result = json.loads((killed / "train" / "result.json").read_text())
    resumed = result["resumed_from_epoch"]
    assert f"resuming from the checkpoint of epoch {resumed}" in done.stdout
    assert resumed >= seen - 1 >= 2, "at most the epoch in progress is lost"
    history = json.loads((killed / "train" / "history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == list(range(1, 9)) and result["epochs"] == 8
    assert not (killed / "train" / "checkpoints").exists(), "checkpoints go once the model is saved"

    fpgaflow("train", "--trial-dir", str(whole))
    uninterrupted = json.loads((whole / "train" / "result.json").read_text())
    assert result["accuracy"] == pytest.approx(uninterrupted["accuracy"], abs=0.02)
    # the optimizer's state came back too: the first epoch after the resume continues the loss curve
    after = next(row for row in history if row["epoch"] == resumed + 1)
    before = next(row for row in history if row["epoch"] == resumed)
    assert after["loss"] < before["loss"] * 1.05


def test_a_run_that_blows_up_stops_early_as_diverged(tmp_path):
    # a learning rate of 10 throws the weights far off within the first epoch
    spec = {**SPEC, "dataset": {**SPEC["dataset"], "samples": 5000}, "train": {"epochs": 6, "batchSize": 128, "learningRate": 10}}
    trial = _trial(tmp_path, "t02", spec)
    done = fpgaflow("train", "--trial-dir", str(trial), check=False)
    assert done.returncode != 0
    error = json.loads((trial / "train" / "error.json").read_text())
    assert error["reason"] == "Diverged" and "stopped at epoch" in error["message"], error
    epochs = len(json.loads((trial / "train" / "history.json").read_text())["epochs"])
    assert epochs < 6, "the run stopped early"
    assert not (trial / "train" / "result.json").exists()


def test_exploding_gradients_stop_the_run_at_the_first_epoch(tmp_path):
    spec = {**SPEC, "dataset": {**SPEC["dataset"], "samples": 5000},
            "train": {"epochs": 4, "batchSize": 128, "diagnostics": {"maxGradientNorm": 1e-4}}}
    trial = _trial(tmp_path, "t03", spec)
    assert fpgaflow("train", "--trial-dir", str(trial), check=False).returncode != 0
    error = json.loads((trial / "train" / "error.json").read_text())
    assert error["reason"] == "Diverged" and "stopped at epoch 1: the gradients exploded" in error["message"], error
    assert "no epoch before it finished" in error["message"], "epoch 1 was diagnosed, so no checkpoint holds"
