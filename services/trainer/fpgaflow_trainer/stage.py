"""The `train` stage: provenance and preconditions first; then the Keras trainer (``train``) or the user's
``train.command`` (``command``); notifications at the end. A ``train.command`` stage imports no TensorFlow:
its program brings its own framework."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from fpgaflow.errors import Diverged
from fpgaflow.provenance import CODE_FOLDER, git_info, host_facts, package_versions
from fpgaflow.trial import KERAS_ARTIFACTS, TrialDir, write_json
from fpgaflow_trainer.notify import notify_trial
from fpgaflow_trainer.preconditions import check


@dataclass
class Host:
    """host.json: the machine's facts, the preconditions checked, the resources sampled while training."""

    path: Path
    facts: dict

    def write(self) -> None:
        write_json(self.path, self.facts)


def device_gpus() -> list[str]:
    """NVIDIA GPUs by their device files, for a train.command (its framework finds them itself)."""
    return sorted(Path(p).name for p in glob.glob("/dev/nvidia[0-9]*"))


def run(trial: TrialDir, out: Path, metrics_address: tuple[str, int] | None = None) -> dict:
    """The train stage: the Keras trainer, or the spec's ``train.command``; notifications as the spec asks.
    With ``metrics_address`` (host, port) the Keras trainer serves live metrics there."""
    spec = trial.spec()
    if spec.train.command is None:
        from fpgaflow_trainer.train import list_gpus

        gpus = list_gpus()
    else:
        gpus = device_gpus()
    write_json(out / "git.json", {"code": git_info(CODE_FOLDER), "fpgaflow": package_versions(("fpgaflow",))["fpgaflow"]})
    host = Host(out / "host.json", host_facts(out, gpus))
    host.write()
    try:
        if spec.train.command is not None:
            host.facts["preconditions"] = check(spec, out, gpus)
            host.write()
            from fpgaflow_trainer.command import run_command

            result = run_command(trial, out, spec.train.command)
            result["convertible"] = all((out / name).exists() for name in KERAS_ARTIFACTS)
        else:
            from fpgaflow_trainer.datasets import needed_bytes
            from fpgaflow_trainer.train import data_cache, train_keras

            cache = data_cache(trial)
            # before anything is loaded or made
            host.facts["preconditions"] = check(spec, out, gpus, dataset=(cache, needed_bytes(spec.dataset, cache)))
            host.write()
            result = train_keras(trial, spec, out, metrics_address, host)
    except Diverged as exc:
        notify_trial(trial, out, "Diverged", error=exc)
        raise
    except Exception as exc:
        notify_trial(trial, out, "Failed", error=exc)
        raise
    notify_trial(trial, out, "Succeeded", result=result)
    return result
