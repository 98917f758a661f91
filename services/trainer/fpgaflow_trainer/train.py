"""The `train` stage: provenance and preconditions first; then the Keras trainer (data set, scaler, the
spec's model trained in float and, with quantize.method qat, fine-tuned in fixed point; pruned, checkpointed,
diagnosed, its history and curves recorded) or the user's ``train.command``; notifications at the end."""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fpgaflow.errors import Diverged
from fpgaflow.plots import plot_training
from fpgaflow.preprocess import Scaler
from fpgaflow.provenance import CODE_FOLDER, git_info, host_facts, package_versions
from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import KERAS_ARTIFACTS, TrialDir, write_json
from fpgaflow_trainer import qat
from fpgaflow_trainer.checkpoint import Checkpointer, ResumedEarlyStopping, latest, latest_epoch, restore_rng
from fpgaflow_trainer.command import run_command
from fpgaflow_trainer.datasets import load_dataset
from fpgaflow_trainer.diagnostics import Diagnostics
from fpgaflow_trainer.epochstats import EpochStatistics
from fpgaflow_trainer.hostmon import HostSampler
from fpgaflow_trainer.model import build_model, model_input
from fpgaflow_trainer.monitor import MetricsReporter, TrainingMetrics
from fpgaflow_trainer.notify import notify_trial
from fpgaflow_trainer.preconditions import check, estimate_training_seconds
from fpgaflow_trainer.pruning import Pruner

GRADIENT_PROBE = 1024  # training samples of the batch whose gradient norm is recorded each epoch


class HistoryRecorder(keras.callbacks.Callback):
    """Writes history.json after every epoch, so progress can be watched while training runs.

    A row holds Keras' logs (loss, accuracy, val_*), the epoch time, the learning rate, the training
    phase ("float", then "qat" when fine-tuned in fixed point) and the ``statistics`` of the model.
    """

    def __init__(self, path: Path, total_epochs: int, epochs: list[dict] | None = None,
                 statistics: EpochStatistics | None = None):
        super().__init__()
        self.path, self.total, self.statistics = path, total_epochs, statistics
        self.epochs: list[dict] = list(epochs or [])  # rows of epochs before a resume
        self.phase = "float"
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "phase": self.phase, "epoch_seconds": round(time.perf_counter() - self._t0, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.statistics is not None:
            row.update(self.statistics(self.model))
        self.epochs.append(row)
        write_json(self.path, {"total_epochs": self.total, "epochs": self.epochs})
        print(progress_line(row, self.total), flush=True)


def progress_line(row: dict, total: int) -> str:
    """Keras' own epoch line, from the history row: Epoch 3/10 - 1.23s - accuracy: 0.7712 - loss: 0.6401 - ..."""
    shown = [f"{key}: {row[key]:.4f}" for key in ("accuracy", "loss", "val_accuracy", "val_loss") if key in row]
    return " - ".join([f"Epoch {row['epoch']}/{total}", f"{row['epoch_seconds']:.2f}s", *shown])


def validation_split(n: int, fraction: float) -> int:
    """Where the fit/validation split falls: the last ``fraction`` of the (shuffled) training set validates."""
    return int(math.floor(n * (1.0 - fraction)))


def run(trial: TrialDir, out: Path, metrics_address: tuple[str, int] | None = None) -> dict:
    """The train stage: the Keras trainer, or the spec's ``train.command``; notifications as the spec asks.
    With ``metrics_address`` (host, port) live metrics are served there."""
    spec = trial.spec()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    write_json(out / "git.json", {"code": git_info(CODE_FOLDER), "fpgaflow": package_versions(("fpgaflow",))["fpgaflow"]})
    host = Host(out / "host.json", host_facts(out, gpus))
    host.write()
    try:
        host.facts["preconditions"] = check(spec, out, gpus)  # disk, memory, GPU: before anything is loaded
        host.write()
        if spec.train.command is not None:
            result = run_command(trial, out, spec.train.command)
            result["convertible"] = all((out / name).exists() for name in KERAS_ARTIFACTS)
        else:
            result = train_keras(trial, spec, out, metrics_address, host)
    except Diverged as exc:
        notify_trial(trial, out, "Diverged", error=exc)
        raise
    except Exception as exc:
        notify_trial(trial, out, "Failed", error=exc)
        raise
    notify_trial(trial, out, "Succeeded", result=result)
    return result


@dataclass
class Host:
    """host.json: the machine's facts, the preconditions checked, the resources sampled while training."""

    path: Path
    facts: dict

    def write(self) -> None:
        write_json(self.path, self.facts)


def planned_epochs(spec: ExperimentSpec) -> int:
    return spec.train.epochs + (spec.quantize.epochs if spec.quantize.method == "qat" else 0)


def train_keras(trial: TrialDir, spec: ExperimentSpec, out: Path, metrics_address: tuple[str, int] | None, host: Host) -> dict:
    """Float training, then (quantize.method qat) fine-tuning in fixed point, epochs numbered on; pruned
    on the spec's schedule through both; checkpointed every epoch and resumed from the last one."""
    qat.check_spec(spec)  # a QAT spec that cannot be built is refused before any training
    monitor = None
    if metrics_address is not None:
        monitor = TrainingMetrics(trial.experiment, trial.root.name)
        monitor.serve(metrics_address[1], host=metrics_address[0])
    keras.utils.set_random_seed(spec.dataset.seed)
    data = load_dataset(spec.dataset)
    scaler = Scaler.fit(data.x_train, data.features)
    x_train, x_test = scaler.apply(data.x_train), scaler.apply(data.x_test)

    checkpoints = out / "checkpoints"
    resumed = latest(checkpoints)
    if resumed is None:
        model = build_model(spec.model, data.shape, len(data.classes))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=spec.train.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        first_epoch, state = 0, {}
    else:  # a killed run: weights, optimizer, history and counters from its last epoch
        model, first_epoch, state = resumed.model, resumed.epoch, resumed.state
        restore_rng(state)
        print(f"train: resuming from the checkpoint of epoch {first_epoch} ({state['phase']}) in {checkpoints}")
    x_train, x_test = model_input(model, x_train), model_input(model, x_test)  # flat for mlp/binary, images for cnn/resnet
    if spec.preconditions.max_duration and first_epoch < planned_epochs(spec):
        estimate = estimate_training_seconds(model, x_train, data.y_train, spec.train.batch_size,
                                             planned_epochs(spec) - first_epoch, spec.train.validation_fraction)
        host.facts["preconditions"] = {**check(spec, out, host.facts.get("gpus", []), estimate["seconds"]), "estimate": estimate}
        host.write()
    split = validation_split(len(x_train), spec.train.validation_fraction)
    x_fit, y_fit, x_val, y_val = x_train[:split], data.y_train[:split], x_train[split:], data.y_train[split:]
    probe = min(GRADIENT_PROBE, spec.train.batch_size)
    statistics = EpochStatistics(x_val, y_val, x_fit[:probe], y_fit[:probe], data.classes)
    recorder = HistoryRecorder(out / "history.json", planned_epochs(spec), state.get("history"), statistics)
    diagnostics = Diagnostics(recorder.epochs, spec.train.diagnostics)
    checkpointer = Checkpointer(checkpoints, recorder.epochs, healthy=lambda: diagnostics.diagnosis is None,
                                extra={"accuracy_float": state.get("accuracy_float")})
    # No callback here has a per-batch hook: one makes Keras hand every batch's logs to Python (about 65 us
    # a batch, 4 % of the jet tagger's fit); the history recorder prints the progress line of each epoch.
    callbacks: list[keras.callbacks.Callback] = [recorder, diagnostics, checkpointer]
    if spec.train.pruning is not None:  # one pruner for both phases: the fixed-point model keeps the zeros
        callbacks.append(Pruner(spec.train.pruning, spec.train.epochs))
    if monitor is not None:
        callbacks.append(MetricsReporter(monitor, planned_epochs(spec), len(x_fit), recorder.epochs))
    early_stopping = None
    if spec.train.early_stopping:  # of the float phase; fine-tuning runs its few epochs
        early_stopping = ResumedEarlyStopping(state.get("early_stopping"), patience=spec.train.early_stopping.patience,
                                              restore_best_weights=True)
        checkpointer.early_stopping = early_stopping

    def fit(first: int, last: int, more: list[keras.callbacks.Callback]) -> None:
        model.fit(x_fit, y_fit, epochs=last, initial_epoch=first, batch_size=spec.train.batch_size,
                  validation_data=(x_val, y_val), callbacks=callbacks + more, verbose=0)

    started = time.perf_counter()
    sampler = HostSampler(out, metrics=monitor, gpus=host.facts.get("gpus"))
    try:
        with sampler:
            in_qat = state.get("phase") == "qat"
            if not in_qat and first_epoch < spec.train.epochs:
                fit(first_epoch, spec.train.epochs, [early_stopping] if early_stopping else [])
            if spec.quantize.method == "qat" and diagnostics.diagnosis is None:
                if not in_qat:
                    checkpointer.extra["accuracy_float"] = accuracy_on(model, x_test, data.y_test)
                    model = qat.to_qat(model, spec)
                qat_start = next((row["epoch"] - 1 for row in recorder.epochs if row.get("phase") == "qat"),
                                 recorder.epochs[-1]["epoch"] if recorder.epochs else 0)
                recorder.phase = checkpointer.phase = "qat"
                print(f"train: fine-tuning in fixed point (quantize.method qat) for {spec.quantize.epochs} epochs")
                fit(first_epoch if in_qat else qat_start, qat_start + spec.quantize.epochs, [])
    finally:
        host.facts["sampling"] = sampler.stop()
        host.write()
    seconds = time.perf_counter() - started
    if diagnostics.diagnosis is not None:
        found = diagnostics.diagnosis
        kept = f"the last good checkpoint is in {checkpoints}" if latest_epoch(checkpoints) else "no epoch before it finished"
        raise Diverged(f"stopped at epoch {found.epoch}: {found.message}; {kept}")
    accuracy = accuracy_on(model, x_test, data.y_test)

    model.save(out / "model.keras")
    scaler.save(out / "scaler.json")
    # raw (unscaled) samples in the shape the model takes: what the converter, the servers and the bench feed it
    np.savez_compressed(out / "testset.npz", x=model_input(model, data.x_test).astype(np.float32), y=data.y_test)
    write_json(out / "dataset.json", data.describe())
    shutil.rmtree(checkpoints)  # the finished model is saved; a forced rerun starts afresh
    plot_training(recorder.epochs, out / "training.png", title=f"{trial.experiment} / {trial.root.name}")
    result = {
        "accuracy": accuracy,
        "epochs": len(recorder.epochs),
        "resumed_from_epoch": first_epoch or None,
        "train_seconds": round(seconds, 2),
        "parameters": int(model.count_params()),
        "dataset": data.describe(),
    }
    if spec.quantize.method == "qat":
        result.update(quantized=True, accuracy_float=checkpointer.extra["accuracy_float"], accuracy_qat=accuracy)
    if spec.train.pruning is not None:
        result["sparsity"] = recorder.epochs[-1]["sparsity"]
    return result


def accuracy_on(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(model.predict(x, batch_size=4096, verbose=0)).argmax(axis=1) == y).mean())
