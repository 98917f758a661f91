"""The trial folder: the one contract between stages, the local runner and the operator.

```
<trial>/spec.json            resolved spec of this trial, with the experiment's name
<trial>/<stage>/result.json  written last by a stage that finished: its presence means done
<trial>/<stage>/error.json   written by a stage that failed: reason and one-line message
<trial>/<stage>/log.txt      what the stage printed (written by whoever started it)
<trial>/serve/<target>/server.json  written by a server once it answers (health SERVING): address, back end
<trial>/serve/<target>/error.json   written by a server that could not start (reason Unavailable: no such device)
```
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpgaflow.errors import FpgaflowError, MissingArtifact, StageError, StaleResult
from fpgaflow.spec import ExperimentSpec, spec_to_dict
from fpgaflow.tracking import write_json  # the one atomic JSON writer; every stage imports it from here

STAGES = ("train", "convert", "serve", "bench")  # in the order they run
BUILD_STAGES = ("train", "convert")  # what serving needs: each runs once, to completion
RUN_STAGES = ("train", "convert", "bench")  # the stages that finish (result.json or error.json); serve runs until stopped
# The service that runs each stage: its distribution fpgaflow-<service>, image fpgaflow/<service>, folder services/<service>.
STAGE_SERVICE = {"train": "trainer", "convert": "converter", "serve": "inference", "bench": "inference"}
# What the later stages read from train/: a train.command that writes none of them (a PyTorch script,
# say) trains only, and its trial ends there.
KERAS_ARTIFACTS = ("model.keras", "scaler.json", "testset.npz")
# The trained model's input and output tensors, by these names in the Keras file, the HLS project and every API.
INPUT_NAME = "features"  # hls4ml reserves the name "input"
OUTPUT_NAME = "probabilities"
# train/trainset.npz: the raw training samples (x in the model's input shape, y), written for quantize.retrainHead
TRAINSET = "trainset.npz"
# Test samples every stage evaluates on (the fidelity check, the served accuracy): the first N of testset.npz.
EVALUATION_SAMPLES = 50_000


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingArtifact(f"{path} is missing; has the stage that writes it run?") from None


@dataclass(frozen=True)
class TrialDir:
    root: Path

    @classmethod
    def create(cls, root: Path, experiment: str, trial: str, parameters: dict, spec: ExperimentSpec) -> TrialDir:
        """Write spec.json for a new trial, or check that an existing one holds the same spec."""
        td = cls(Path(root))
        doc = {"experiment": experiment, "trial": trial, "parameters": parameters, "spec": spec_to_dict(spec)}
        if td.spec_path.exists():
            if read_json(td.spec_path)["spec"] != doc["spec"]:
                raise StaleResult(f"{td.root} holds trial {trial} with a different spec; use another experiment name or --replace")
            return td
        write_json(td.spec_path, doc)
        return td

    @property
    def spec_path(self) -> Path:
        return self.root / "spec.json"

    def meta(self) -> dict:
        return read_json(self.spec_path)

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec.model_validate(self.meta()["spec"])

    @property
    def experiment(self) -> str:
        return self.meta()["experiment"]

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def result(self, stage: str) -> dict | None:
        path = self.stage_dir(stage) / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def error(self, stage: str) -> dict | None:
        path = self.stage_dir(stage) / "error.json"
        return json.loads(path.read_text()) if path.exists() else None

    def done(self, stage: str) -> bool:
        return (self.stage_dir(stage) / "result.json").exists()

    def stages(self) -> tuple[str, ...]:
        """The stages this trial runs: all of them, or only train when its train stage left no Keras model."""
        train = self.result("train")
        return ("train",) if train is not None and train.get("convertible") is False else STAGES


# convert/retrained/: the model whose head was retrained on the firmware's featurizer outputs (quantize.retrainHead,
# the Brainwave recipe's last step), with its own model.keras, hls4ml project and emulator; served as version 2.
RETRAINED = "retrained"


@dataclass(frozen=True)
class ModelVersion:
    """A version of the trial's model that the servers serve: its Keras file (cpu, gpu) and its converted
    firmware's folder (fpga: ``emulator/``, ``hls4ml_prj/``)."""

    number: int
    model: Path
    convert: Path
    description: str

    def result(self) -> dict:
        """What the convert stage says of this version's firmware (its result.json; {} where there is none)."""
        path = self.convert / "result.json"
        return json.loads(path.read_text()) if path.exists() else {}


def model_versions(trial: TrialDir) -> list[ModelVersion]:
    """Version 1, the model as trained; version 2 where the convert stage retrained its head."""
    convert = trial.stage_dir("convert")
    versions = [ModelVersion(1, trial.stage_dir("train") / "model.keras", convert, "as trained")]
    retrained = convert / RETRAINED
    if (retrained / "model.keras").is_file() and (retrained / "emulator").is_dir():
        versions.append(ModelVersion(2, retrained / "model.keras", retrained,
                                     "head retrained on the firmware's featurizer outputs"))
    return versions


def run_stage(stage: str, trial_dir: str | Path, work: Callable[[TrialDir, Path], dict], force: bool = False) -> int:
    """Run one stage's work on a trial folder with the stage contract around it.

    ``work(trial, outdir)`` does the stage and returns its result summary. A finished stage is skipped
    (its result is never silently overwritten); a failure writes error.json and prints one line.
    Returns the process exit code.
    """
    trial = TrialDir(Path(trial_dir))
    out = trial.stage_dir(stage)
    if trial.done(stage) and not force:
        print(f"{stage}: already done in {out}, skipped (pass --force to redo it)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.json").unlink(missing_ok=True)
    (out / "result.json").unlink(missing_ok=True)
    try:
        if not trial.spec_path.exists():
            raise MissingArtifact(f"{trial.spec_path} is missing: not a trial folder")
        result = work(trial, out)
    except FpgaflowError as exc:
        return record_failure(stage, out, exc.reason, str(exc), exc.exit_code)
    except Exception as exc:  # an unexpected failure still ends as one line and an error.json
        traceback.print_exc(file=sys.stderr)
        return record_failure(stage, out, StageError.reason, f"{type(exc).__name__}: {exc}", 1)
    write_json(out / "result.json", result)
    return 0


def record_failure(stage: str, out: Path, reason: str, message: str, code: int) -> int:
    """Write error.json and print the one line that says why; returns the exit code."""
    write_json(out / "error.json", {"stage": stage, "reason": reason, "message": message})
    print(f"{stage} failed ({reason}): {message}", file=sys.stderr, flush=True)
    return code
