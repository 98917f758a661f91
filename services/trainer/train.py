"""The `train` stage: data set, scaler, Keras model of the spec, trained, with its history and curves."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fpgaflow.errors import Diverged
from fpgaflow.plots import plot_training
from fpgaflow.preprocess import Scaler
from fpgaflow.provenance import CODE_FOLDER, git_info, host_facts, package_versions
from fpgaflow.trainer.checkpoint import Checkpointer, ResumedEarlyStopping, latest, latest_epoch, restore_rng
from fpgaflow.trainer.datasets import load_dataset
from fpgaflow.trainer.diagnostics import Diagnostics
from fpgaflow.trainer.model import build_model
from fpgaflow.trainer.monitor import MetricsReporter, TrainingMetrics
from fpgaflow.trial import TrialDir, write_json

DIAGNOSTIC_PROBE = 1024  # training samples the dead-ReLU check looks at after each epoch


class HistoryRecorder(keras.callbacks.Callback):
    """Writes history.json after every epoch, so progress can be watched while training runs."""

    def __init__(self, path: Path, total_epochs: int, epochs: list[dict] | None = None):
        super().__init__()
        self.path, self.total = path, total_epochs
        self.epochs: list[dict] = list(epochs or [])  # rows of epochs before a resume
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "epoch_seconds": round(time.perf_counter() - self._t0, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.epochs.append(row)
        write_json(self.path, {"total_epochs": self.total, "epochs": self.epochs})


def run(trial: TrialDir, out: Path, metrics_address: tuple[str, int] | None = None) -> dict:
    """Train the trial's model; with ``metrics_address`` (host, port) live metrics are served there."""
    spec = trial.spec()
    monitor = None
    if metrics_address is not None:
        monitor = TrainingMetrics(trial.experiment, trial.root.name)
        monitor.serve(metrics_address[1], host=metrics_address[0])
    write_json(out / "git.json", {"code": git_info(CODE_FOLDER), "fpgaflow": package_versions(("fpgaflow",))["fpgaflow"]})
    write_json(out / "host.json", host_facts(out, [d.name for d in tf.config.list_physical_devices("GPU")]))
    keras.utils.set_random_seed(spec.dataset.seed)
    data = load_dataset(spec.dataset)
    scaler = Scaler.fit(data.x_train, data.features)
    x_train, x_test = scaler.apply(data.x_train), scaler.apply(data.x_test)

    checkpoints = out / "checkpoints"
    resumed = latest(checkpoints)
    if resumed is None:
        model = build_model(spec.model, x_train.shape[1], len(data.classes))
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=spec.train.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        first_epoch, state = 0, {}
    else:  # a killed run: weights, optimizer, history and counters from its last epoch
        model, first_epoch, state = resumed.model, resumed.epoch, resumed.state
        restore_rng(state)
        print(f"train: resuming from the checkpoint of epoch {first_epoch} in {checkpoints}")
    recorder = HistoryRecorder(out / "history.json", spec.train.epochs, state.get("history"))
    diagnostics = Diagnostics(x_train[:DIAGNOSTIC_PROBE], [row["val_loss"] for row in recorder.epochs if "val_loss" in row])
    callbacks: list[keras.callbacks.Callback] = [recorder, diagnostics]
    early_stopping = None
    if spec.train.early_stopping:
        early_stopping = ResumedEarlyStopping(state.get("early_stopping"), patience=spec.train.early_stopping.patience,
                                              restore_best_weights=True)
    callbacks.append(Checkpointer(checkpoints, recorder.epochs, early_stopping, healthy=lambda: diagnostics.diagnosis is None))
    if monitor is not None:
        fit_samples = len(x_train) - int(len(x_train) * spec.train.validation_fraction)
        callbacks.append(MetricsReporter(monitor, spec.train.epochs, fit_samples, recorder.epochs))
    if early_stopping is not None:
        callbacks.append(early_stopping)
    started = time.perf_counter()
    if first_epoch < spec.train.epochs:
        model.fit(
            x_train,
            data.y_train,
            epochs=spec.train.epochs,
            initial_epoch=first_epoch,
            batch_size=spec.train.batch_size,
            validation_split=spec.train.validation_fraction,
            callbacks=callbacks,
            verbose=2,
        )
    seconds = time.perf_counter() - started
    if diagnostics.diagnosis is not None:
        found = diagnostics.diagnosis
        kept = f"the last good checkpoint is in {checkpoints}" if latest_epoch(checkpoints) else "no epoch before it finished"
        raise Diverged(f"stopped at epoch {found.epoch}: {found.message}; {kept}")
    probabilities = model.predict(x_test, batch_size=4096, verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == data.y_test).mean())

    model.save(out / "model.keras")
    scaler.save(out / "scaler.json")
    np.savez_compressed(out / "testset.npz", x=data.x_test.astype(np.float32), y=data.y_test)
    write_json(out / "dataset.json", data.describe())
    shutil.rmtree(checkpoints)  # the finished model is saved; a forced rerun starts afresh
    history = {key: [row[key] for row in recorder.epochs if key in row] for key in recorder.epochs[0]} if recorder.epochs else {}
    plot_training(history, out / "training.png", title=f"{trial.experiment} / {trial.root.name}")
    return {
        "accuracy": accuracy,
        "epochs": len(recorder.epochs),
        "resumed_from_epoch": first_epoch or None,
        "train_seconds": round(seconds, 2),
        "parameters": int(model.count_params()),
        "dataset": data.describe(),
    }
