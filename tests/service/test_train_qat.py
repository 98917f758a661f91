"""Float training then fixed-point fine-tuning through the train stage, pruned, converted bit-exactly;
a run killed in its fixed-point phase resumes there."""

from __future__ import annotations

import json

import pytest

from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import TrialDir
from tests.conftest import fpgaflow

pytestmark = pytest.mark.slow

SPEC = {"dataset": {"name": "jets", "samples": 6000, "seed": 4}, "model": {"layers": [16, 8]},
        "train": {"epochs": 2, "batchSize": 128, "learningRate": 0.01, "pruning": {"targetSparsity": 0.5}},
        "quantize": {"method": "qat", "epochs": 2, "learningRate": 5e-4},
        "hls": {"precision": "ap_fixed<16,6>", "layers": {"fc1": {"precision": {"weight": "ap_fixed<8,3,AP_RND,AP_SAT>"}}}}}


def _trial(tmp_path, name="t000") -> TrialDir:
    return TrialDir.create(tmp_path / name, "qat", name, {}, ExperimentSpec.model_validate(SPEC))


def test_a_qat_trial_is_pruned_fine_tuned_and_converted_bit_exactly(tmp_path):
    td = _trial(tmp_path)
    done = fpgaflow("train", "--trial-dir", str(td.root))
    assert "fine-tuning in fixed point" in done.stdout
    result = td.result("train")
    assert result["quantized"] and result["epochs"] == 4 and result["accuracy"] == result["accuracy_qat"]
    assert result["accuracy_qat"] > 0.5 and result["accuracy_float"] > 0.5
    assert result["sparsity"] == pytest.approx(0.5, abs=0.02), "pruned to the target, the zeros kept through QAT"
    rows = json.loads((td.root / "train" / "history.json").read_text())["epochs"]
    assert [(r["epoch"], r["phase"]) for r in rows] == [(1, "float"), (2, "float"), (3, "qat"), (4, "qat")]

    fpgaflow("convert", "--trial-dir", str(td.root))
    fidelity = td.result("convert")["fidelity"]
    assert fidelity["bit_exact"] is True and fidelity["argmax_agreement"] == 1.0
    from fpgaflow.summary import trial_summary

    accuracy = trial_summary(td)["accuracy"]
    assert accuracy["fixed"] == result["accuracy_qat"] and accuracy["float"] == result["accuracy_float"]


class Killed(Exception):
    """The test's stand-in for SIGKILL: raised right after the first fixed-point checkpoint is written."""


def test_a_run_killed_in_the_fixed_point_phase_resumes_there(tmp_path, monkeypatch):
    from fpgaflow_trainer import stage
    from fpgaflow_trainer.checkpoint import Checkpointer

    original = Checkpointer.on_epoch_end

    def kill_after_first_qat_checkpoint(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.phase == "qat":
            raise Killed

    td = _trial(tmp_path)
    out = td.stage_dir("train")
    out.mkdir(parents=True)
    monkeypatch.setattr(Checkpointer, "on_epoch_end", kill_after_first_qat_checkpoint)
    with pytest.raises(Killed):
        stage.run(td, out)
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["epoch"] == 3
    monkeypatch.setattr(Checkpointer, "on_epoch_end", original)
    result = stage.run(td, out)
    assert result["resumed_from_epoch"] == 3 and result["epochs"] == 4
    assert result["accuracy_float"] is not None, "the float accuracy came back from the checkpoint"
    rows = json.loads((out / "history.json").read_text())["epochs"]
    assert [(r["epoch"], r["phase"]) for r in rows] == [(1, "float"), (2, "float"), (3, "qat"), (4, "qat")]
    from fpgaflow.keras_model import is_qat, load_model

    assert is_qat(load_model(out / "model.keras"))
