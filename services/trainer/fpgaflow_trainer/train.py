"""The Keras trainer of the `train` stage (``fpgaflow_trainer.stage``): the data set, the scaler, the spec's model
trained in float and, with quantize.method qat, fine-tuned in fixed point; pruned, checkpointed, diagnosed, its
history and curves recorded."""

from __future__ import annotations

import dataclasses
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
from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import TRAINSET, TrialDir, write_json
from fpgaflow_trainer import qat
from fpgaflow_trainer.checkpoint import Checkpointer, ResumedEarlyStopping, latest, latest_epoch, restore_rng
from fpgaflow_trainer.datasets import Dataset, cache_folder, load_dataset, progress_printer
from fpgaflow_trainer.diagnostics import Diagnostics
from fpgaflow_trainer.epochstats import EpochStatistics
from fpgaflow_trainer.hostmon import HostSampler
from fpgaflow_trainer.model import build_model, input_threshold, model_input, prepare_binary_input
from fpgaflow_trainer.monitor import MetricsReporter, TrainingMetrics
from fpgaflow_trainer.preconditions import check, estimate_training_seconds
from fpgaflow_trainer.pruning import Pruner
from fpgaflow_trainer.stage import Host

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


def list_gpus() -> list[str]:
    return [d.name for d in tf.config.list_physical_devices("GPU")]


def planned_epochs(spec: ExperimentSpec) -> int:
    return spec.train.epochs + (spec.quantize.epochs if spec.quantize.method == "qat" else 0)


@dataclass(frozen=True)
class Start:
    """Where training starts: a new compiled model at epoch 0 with no state, or a killed run's model, the epoch
    of its last checkpoint and the state saved with it (phase, history, early-stopping counters, RNG)."""

    model: keras.Model
    epoch: int
    state: dict

    @property
    def in_qat(self) -> bool:
        """Whether the checkpoint resumed is of the fixed-point (qat) phase."""
        return self.state.get("phase") == "qat"


@dataclass(frozen=True)
class FitSets:
    """The scaled data in the model's input shape: the training set split into the part fitted and the part
    validating, and the test set."""

    x_fit: np.ndarray
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Loop:
    """The callbacks of both phases' fits, and those the trainer reads or steers between the phases."""

    recorder: HistoryRecorder
    diagnostics: Diagnostics
    checkpointer: Checkpointer
    early_stopping: ResumedEarlyStopping | None
    callbacks: list[keras.callbacks.Callback]


def train_keras(trial: TrialDir, spec: ExperimentSpec, out: Path, metrics_address: tuple[str, int] | None,
                host: Host) -> dict:
    """Float training, then (quantize.method qat) fine-tuning in fixed point, epochs numbered on; pruned
    on the spec's schedule through both; checkpointed every epoch and resumed from the last one."""
    qat.check_spec(spec)  # a QAT spec that cannot be built is refused before any training
    monitor = _serve_metrics(trial, metrics_address)
    data, scaler = _load_data(spec, data_cache(trial))
    x_train, x_test = scaler.apply(data.x_train), scaler.apply(data.x_test)
    checkpoints = out / "checkpoints"
    start = _build_or_resume(spec, data, scaler, checkpoints)
    # flat for mlp/binary, images for cnn/resnet
    x_train, x_test = model_input(start.model, x_train), model_input(start.model, x_test)
    _recheck_duration(spec, out, host, start, x_train, data.y_train)
    sets = _split(spec, x_train, data.y_train, x_test, data.y_test)
    loop = _callbacks(spec, out, checkpoints, start.state, sets, data.classes, monitor)
    started = time.perf_counter()
    model = _train_phases(spec, out, host, monitor, start, sets, loop)
    seconds = time.perf_counter() - started
    _raise_if_diverged(loop.diagnostics, checkpoints)
    accuracy = accuracy_on(model, sets.x_test, sets.y_test)
    _save_artifacts(trial, out, model, scaler, data, checkpoints, loop.recorder.epochs)
    return _result(spec, data, model, accuracy, seconds, start.epoch, loop)


def _serve_metrics(trial: TrialDir, metrics_address: tuple[str, int] | None) -> TrainingMetrics | None:
    """The live training metrics, served at ``metrics_address`` (host, port); None without an address."""
    if metrics_address is None:
        return None
    monitor = TrainingMetrics(trial.experiment, trial.root.name)
    monitor.serve(metrics_address[1], host=metrics_address[0])
    return monitor


def data_cache(trial: TrialDir) -> Path:
    """The data-set cache of the run store that holds the trial (``<store>/<experiments or namespace>/<experiment>/
    <trial>``): one for every experiment and trial, on the artifacts volume in a cluster."""
    return cache_folder(trial.root.resolve().parents[2])


def _load_data(spec: ExperimentSpec, cache: Path) -> tuple[Dataset, Scaler]:
    """The data set, loaded (or simulated into the cache) after seeding Keras' random generators with its seed,
    and the scaler fitted on its training set."""
    keras.utils.set_random_seed(spec.dataset.seed)
    data = load_dataset(spec.dataset, cache, progress_printer(spec.dataset.name))
    return data, Scaler.fit(data.x_train, data.features)


def _build_or_resume(spec: ExperimentSpec, data: Dataset, scaler: Scaler, checkpoints: Path) -> Start:
    """The spec's model, built and compiled, at epoch 0; or, after a killed run, its last checkpoint's
    weights, optimizer, history and counters, with the numpy random state restored."""
    resumed = latest(checkpoints)
    if resumed is None:
        model = build_model(spec.model, data.shape, len(data.classes))
        if spec.model.type == "binary":  # LFC's input binarization, at a raw threshold, on standardized inputs
            prepare_binary_input(model, input_threshold(spec.model, data.x_train), scaler.mean, scaler.scale)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=spec.train.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return Start(model, 0, {})
    restore_rng(resumed.state)
    print(f"train: resuming from the checkpoint of epoch {resumed.epoch} ({resumed.state['phase']}) "
          f"in {checkpoints}")
    return Start(resumed.model, resumed.epoch, resumed.state)


def _recheck_duration(spec: ExperimentSpec, out: Path, host: Host, start: Start, x_train: np.ndarray,
                      y_train: np.ndarray) -> None:
    """With preconditions.maxDuration and epochs left to train: the preconditions checked again with the
    estimated duration of those epochs (raising PreconditionFailed when short), the facts in host.json."""
    if spec.preconditions.max_duration and start.epoch < planned_epochs(spec):
        left = planned_epochs(spec) - start.epoch
        estimate = estimate_training_seconds(start.model, x_train, y_train, spec.train.batch_size, left,
                                             spec.train.validation_fraction)
        facts = check(spec, out, host.facts.get("gpus", []), estimate["seconds"])
        host.facts["preconditions"] = {**facts, "estimate": estimate}
        host.write()


def _split(spec: ExperimentSpec, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
           y_test: np.ndarray) -> FitSets:
    """The training set split at ``validation_split``: the last train.validationFraction validates."""
    split = validation_split(len(x_train), spec.train.validation_fraction)
    return FitSets(x_train[:split], y_train[:split], x_train[split:], y_train[split:], x_test, y_test)


def _callbacks(spec: ExperimentSpec, out: Path, checkpoints: Path, state: dict, sets: FitSets,
               classes: tuple[str, ...], monitor: TrainingMetrics | None) -> Loop:
    """The callbacks of the fits: the history recorder with its per-epoch statistics, the diagnostics, the
    checkpointer, the pruner (train.pruning), the live-metrics reporter (with a monitor) and early stopping
    (train.earlyStopping, of the float phase), each continuing from a resumed ``state``."""
    probe = min(GRADIENT_PROBE, spec.train.batch_size)
    statistics = EpochStatistics(sets.x_val, sets.y_val, sets.x_fit[:probe], sets.y_fit[:probe], classes)
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
        callbacks.append(MetricsReporter(monitor, planned_epochs(spec), len(sets.x_fit), recorder.epochs))
    early_stopping = None
    if spec.train.early_stopping:  # of the float phase; fine-tuning runs its few epochs
        early_stopping = ResumedEarlyStopping(state.get("early_stopping"),
                                              patience=spec.train.early_stopping.patience,
                                              restore_best_weights=True)
        checkpointer.early_stopping = early_stopping
    return Loop(recorder, diagnostics, checkpointer, early_stopping, callbacks)


def _fit(spec: ExperimentSpec, model: keras.Model, sets: FitSets, loop: Loop, first: int, last: int,
         more: list[keras.callbacks.Callback]) -> None:
    """``model.fit`` from epoch ``first`` to ``last`` with the loop's callbacks and ``more``."""
    model.fit(sets.x_fit, sets.y_fit, epochs=last, initial_epoch=first, batch_size=spec.train.batch_size,
              validation_data=(sets.x_val, sets.y_val), callbacks=loop.callbacks + more, verbose=0)


def _train_phases(spec: ExperimentSpec, out: Path, host: Host, monitor: TrainingMetrics | None, start: Start,
                  sets: FitSets, loop: Loop) -> keras.Model:
    """The float phase, then the fixed-point one, while the host is sampled; the samples go to host.json
    however training ends. Returns the model trained last."""
    sampler = HostSampler(out, metrics=monitor, gpus=host.facts.get("gpus"))
    try:
        with sampler:
            _float_phase(spec, start, sets, loop)
            return _qat_phase(spec, start, sets, loop)
    finally:
        host.facts["sampling"] = sampler.stop()
        host.write()


def _float_phase(spec: ExperimentSpec, start: Start, sets: FitSets, loop: Loop) -> None:
    """The float model trained up to train.epochs (with early stopping where the spec asks), unless those
    epochs are done or the run resumed in the fixed-point phase."""
    if not start.in_qat and start.epoch < spec.train.epochs:
        _fit(spec, start.model, sets, loop, start.epoch, spec.train.epochs,
             [loop.early_stopping] if loop.early_stopping else [])


def _qat_phase(spec: ExperimentSpec, start: Start, sets: FitSets, loop: Loop) -> keras.Model:
    """With quantize.method qat and no diagnosis: the float model's test accuracy kept and the model made
    fixed point (unless resumed in this phase), then fine-tuned for quantize.epochs, numbered on from the
    float phase's last epoch. Returns the model trained: the fixed-point one, else the float one."""
    model = start.model
    if spec.quantize.method != "qat" or loop.diagnostics.diagnosis is not None:
        return model
    if not start.in_qat:
        loop.checkpointer.extra["accuracy_float"] = accuracy_on(model, sets.x_test, sets.y_test)
        model = qat.to_qat(model, spec)
    epochs = loop.recorder.epochs
    qat_start = next((row["epoch"] - 1 for row in epochs if row.get("phase") == "qat"),
                     epochs[-1]["epoch"] if epochs else 0)
    loop.recorder.phase = loop.checkpointer.phase = "qat"
    print(f"train: fine-tuning in fixed point (quantize.method qat) for {spec.quantize.epochs} epochs")
    first = start.epoch if start.in_qat else qat_start
    _fit(spec, model, sets, loop, first, qat_start + spec.quantize.epochs, [])
    return model


def _raise_if_diverged(diagnostics: Diagnostics, checkpoints: Path) -> None:
    """Diverged, saying at which epoch and why, when the diagnostics stopped training."""
    found = diagnostics.diagnosis
    if found is not None:
        kept = (f"the last good checkpoint is in {checkpoints}" if latest_epoch(checkpoints)
                else "no epoch before it finished")
        raise Diverged(f"stopped at epoch {found.epoch}: {found.message}; {kept}")


def _save_artifacts(trial: TrialDir, out: Path, model: keras.Model, scaler: Scaler, data: Dataset,
                    checkpoints: Path, epochs: list[dict]) -> None:
    """model.keras, scaler.json, testset.npz and dataset.json written; the checkpoints removed (a forced
    rerun starts afresh); the training curves plotted in training.png."""
    model.save(out / "model.keras")
    # the served input: samples of the model's input shape (images stay images), standardized per value
    dataclasses.replace(scaler, shape=tuple(int(d) for d in model.inputs[0].shape[1:])).save(out / "scaler.json")
    # raw (unscaled) samples in the shape the model takes: what the converter, the servers and the bench
    # feed it
    x_test = model_input(model, data.x_test).astype(np.float32)
    np.savez_compressed(out / "testset.npz", x=x_test, y=data.y_test)
    if trial.spec().quantize.retrain_head is not None:  # the convert stage retrains the head on the firmware's
        # featurizer outputs on the training set
        np.savez_compressed(out / TRAINSET, x=model_input(model, data.x_train).astype(np.float32), y=data.y_train)
    write_json(out / "dataset.json", data.describe())
    shutil.rmtree(checkpoints)
    plot_training(epochs, out / "training.png", title=f"{trial.experiment} / {trial.root.name}")


def _result(spec: ExperimentSpec, data: Dataset, model: keras.Model, accuracy: float, seconds: float,
            first_epoch: int, loop: Loop) -> dict:
    """The stage's result: test accuracy, epochs, where it resumed, training time, parameters and data set;
    the float and fixed-point accuracies with quantize.method qat, the final sparsity with pruning."""
    epochs = loop.recorder.epochs
    result = {
        "accuracy": accuracy,
        "epochs": len(epochs),
        "resumed_from_epoch": first_epoch or None,
        "train_seconds": round(seconds, 2),
        "parameters": int(model.count_params()),
        "dataset": data.describe(),
    }
    if spec.quantize.method == "qat":
        accuracy_float = loop.checkpointer.extra["accuracy_float"]
        result.update(quantized=True, accuracy_float=accuracy_float, accuracy_qat=accuracy)
    if spec.train.pruning is not None:
        result["sparsity"] = epochs[-1]["sparsity"]
    return result


def accuracy_on(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(model.predict(x, batch_size=4096, verbose=0)).argmax(axis=1) == y).mean())
