"""Preconditions of the train stage (``spec.preconditions``): free disk, free memory, a GPU, the duration; and
always, room in the data-set cache for a set still to be simulated.

``measure`` reads the host; ``shortfalls`` is a pure function of a spec and measured facts, so any numbers
can be tried; ``check`` does both and raises PreconditionFailed naming every shortfall. The duration comes
from ``estimate_training_seconds``, which times a few steps of a clone of the compiled model.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np

from fpgaflow.errors import PreconditionFailed
from fpgaflow.provenance import memory_bytes
from fpgaflow.spec import PreconditionsSpec, duration_seconds, quantity_bytes
from fpgaflow_trainer.simulation.cache import MARGIN as CACHE_MARGIN

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def human_bytes(n: float) -> str:
    """1288490188 -> '1.2 GiB'; whole numbers without decimals ('2 GiB')."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f} {unit}" if abs(value - round(value)) < 0.05 else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(seconds: float) -> str:
    """5400 -> '1h30m'; 75.4 -> '1m15s'; 0.4 -> '0.4s'."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_field(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_headroom_bytes(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """Memory the process's cgroup may still use: limit minus working set (usage less inactive file cache).

    cgroup v2 (memory.max, memory.current) in the process's own cgroup or at the root of a container's
    namespace, else cgroup v1 (memory/memory.limit_in_bytes); None without a limit or without cgroups.
    """
    folders = [root]
    try:
        for line in self_cgroup.read_text().splitlines():
            if line.startswith("0::") and line[3:].strip("/"):
                folders.insert(0, root / line[3:].strip("/"))
    except OSError:
        pass
    for folder in folders:  # v2
        limit, usage = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
        if limit is not None and usage is not None:
            return max(0, limit - (usage - _stat_field(folder / "memory.stat", "inactive_file")))
    v1 = root / "memory"
    limit, usage = _read_int(v1 / "memory.limit_in_bytes"), _read_int(v1 / "memory.usage_in_bytes")
    if limit is not None and usage is not None and limit < UNLIMITED:
        return max(0, limit - (usage - _stat_field(v1 / "memory.stat", "total_inactive_file")))
    return None


def available_memory_bytes(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """The host's MemAvailable, or the cgroup's headroom where that is smaller; None where neither is known."""
    found = [v for v in (memory_bytes()["available"], cgroup_headroom_bytes(root, self_cgroup)) if v is not None]
    if not found and hasattr(os, "sysconf"):
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError):
            pass
    return min(found) if found else None


def free_disk_bytes(folder: Path) -> int | None:
    """Free bytes of the file system holding ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def measure(folder: Path, gpus: list[str], estimate_seconds: float | None = None,
            dataset: tuple[Path, int] | None = None) -> dict:
    """The facts ``shortfalls`` judges: free disk of ``folder``, available memory, GPUs, the estimated duration,
    and with ``dataset`` (the data-set cache, the bytes a simulated set still needs there) the cache's free disk."""
    facts = {
        "folder": str(folder),
        "free_disk_bytes": free_disk_bytes(folder),
        "available_memory_bytes": available_memory_bytes(),
        "gpus": list(gpus),
        "estimate_seconds": estimate_seconds,
    }
    if dataset is not None and dataset[1]:
        facts.update(dataset_cache=str(dataset[0]), dataset_bytes=dataset[1], dataset_free_bytes=free_disk_bytes(dataset[0]))
    return facts


def shortfalls(spec_pre: PreconditionsSpec, facts: dict) -> list[str]:
    """What ``facts`` (as from ``measure``) lack of what ``spec_pre`` asks; empty when nothing is short.

    A fact that could not be measured (None) refuses nothing.
    """
    found: list[str] = []
    disk = facts.get("free_disk_bytes")
    if spec_pre.min_free_disk is not None and disk is not None and disk < quantity_bytes(spec_pre.min_free_disk):
        found.append(f"free disk in {facts.get('folder')}: {human_bytes(disk)}, the spec asks for at least "
                     f"{human_bytes(quantity_bytes(spec_pre.min_free_disk))} (preconditions.minFreeDisk)")
    memory = facts.get("available_memory_bytes")
    if spec_pre.min_free_memory is not None and memory is not None and memory < quantity_bytes(spec_pre.min_free_memory):
        found.append(f"available memory: {human_bytes(memory)}, the spec asks for at least "
                     f"{human_bytes(quantity_bytes(spec_pre.min_free_memory))} (preconditions.minFreeMemory)")
    if spec_pre.gpu and not facts.get("gpus"):
        found.append("GPUs: none found (TensorFlow lists no GPU device), the spec asks for one (preconditions.gpu)")
    needed, free = facts.get("dataset_bytes"), facts.get("dataset_free_bytes")
    if needed and free is not None and free < needed * CACHE_MARGIN:
        found.append(f"free disk in the data-set cache {facts.get('dataset_cache')}: {human_bytes(free)}, the simulated "
                     f"data set needs about {human_bytes(needed * CACHE_MARGIN)} there (free some, or choose fewer "
                     "samples or another cache: $FPGAFLOW_DATASETS)")
    estimate = facts.get("estimate_seconds")
    if spec_pre.max_duration is not None and estimate is not None and estimate > duration_seconds(spec_pre.max_duration):
        found.append(f"estimated training time: {human_seconds(estimate)}, the spec allows at most "
                     f"{human_seconds(duration_seconds(spec_pre.max_duration))} (preconditions.maxDuration)")
    return found


def check(spec, folder: Path, gpus: list[str], estimate_seconds: float | None = None,
          dataset: tuple[Path, int] | None = None) -> dict:
    """Measure and judge ``spec.preconditions`` (an Experiment spec or a PreconditionsSpec).

    Returns the facts (for host.json); raises PreconditionFailed listing every shortfall.
    """
    spec_pre = getattr(spec, "preconditions", spec)
    facts = measure(folder, gpus, estimate_seconds, dataset)
    found = shortfalls(spec_pre, facts)
    if found:
        raise PreconditionFailed("the host falls short of spec.preconditions: " + "; ".join(found))
    return facts


def _clone_compiled(model):
    """A copy of ``model`` with its weights, compiled like it with a fresh optimizer of the same config."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile_from_config(model.get_compile_config())
    return clone


@contextlib.contextmanager
def _rng_kept():
    """Leaves Python's, NumPy's, Keras's and TensorFlow's global random state as found (the probe draws from them)."""
    import tensorflow as tf
    from keras.src.random.seed_generator import global_seed_generator
    from tensorflow.python.eager import context

    py, npy = random.getstate(), np.random.get_state()
    keras_state = global_seed_generator().state.numpy()
    tf_rng = getattr(context.context(), "_rng", None)
    tf_state = tf_rng.getstate() if tf_rng is not None else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        global_seed_generator().state.assign(tf.constant(keras_state))
        if tf_state is not None and getattr(context.context(), "_rng", None) is tf_rng:
            tf_rng.setstate(tf_state)


def _step_timer():
    """A Keras callback whose ``epochs`` collects each epoch's seconds and its training and validation batch times."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []
            self.t = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append({"train": [], "test": [], "t0": time.perf_counter()})

        def on_epoch_end(self, epoch, logs=None):
            self.epochs[-1]["seconds"] = time.perf_counter() - self.epochs[-1]["t0"]

        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.epochs[-1]["train"].append(time.perf_counter() - self.t)

        def on_test_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_test_batch_end(self, batch, logs=None):
            self.epochs[-1]["test"].append(time.perf_counter() - self.t)

    return StepTimer()


def estimate_training_seconds(model, x, y, batch_size: int, epochs: int, validation_fraction: float = 0.0,
                              probe_batches: int = 4) -> dict:
    """Seconds ``model.fit(x, y, batch_size, epochs, validation_split=validation_fraction)`` should take.

    Fits a clone of the compiled model for two epochs of ``probe_batches`` batches (and as many validation
    batches): the first warms up (traces the step functions; counted once), the second gives the time of a
    training step, of a validation step and of the rest of an epoch, which are extrapolated to ``epochs`` x
    the batches of the full data. The model's weights and optimizer and the global random state are
    untouched. Returns {"seconds", "method", ...the terms}; "seconds" is None (and "method" says why) when
    the model cannot be cloned.
    """
    probe_batches = max(1, probe_batches)
    n = len(x)
    n_val = int(n * validation_fraction)
    n_train = n - n_val
    batches, val_batches = math.ceil(n_train / batch_size), math.ceil(n_val / batch_size)
    started = time.perf_counter()
    with _rng_kept():
        try:
            clone = _clone_compiled(model)
        except Exception as exc:  # a custom layer without a config, say: no estimate, said so
            return {"seconds": None,
                    "method": f"not estimated: the model could not be cloned ({type(exc).__name__}: {exc})"}
        k = min(n_train, probe_batches * batch_size)
        validation = None
        if n_val:
            kv = min(n_val, probe_batches * batch_size)
            validation = (np.asarray(x[n_train:n_train + kv]), np.asarray(y[n_train:n_train + kv]))
        timer = _step_timer()
        fit_started = time.perf_counter()
        clone.fit(np.asarray(x[:k]), np.asarray(y[:k]), batch_size=batch_size, epochs=2, validation_data=validation,
                  callbacks=[timer], verbose=0)
        fit_seconds = time.perf_counter() - fit_started
    last = timer.epochs[-1]
    step = sum(last["train"]) / len(last["train"])
    val_step = sum(last["test"]) / len(last["test"]) if last["test"] else 0.0
    overhead = max(0.0, last["seconds"] - sum(last["train"]) - sum(last["test"]))
    warmup = max(0.0, fit_seconds - 2 * last["seconds"])
    seconds = warmup + epochs * (batches * step + val_batches * val_step + overhead)
    return {
        "seconds": round(seconds, 3),
        "method": f"a clone fitted 2 epochs of {len(last['train'])} batches: the second epoch's mean step times "
                  f"and per-epoch rest, times {epochs} epochs x ({batches} training + {val_batches} validation "
                  "batches), plus the first epoch's warm-up",
        "epochs": epochs,
        "batches_per_epoch": batches,
        "validation_batches_per_epoch": val_batches,
        "step_seconds": round(step, 6),
        "validation_step_seconds": round(val_step, 6),
        "epoch_overhead_seconds": round(overhead, 4),
        "warmup_seconds": round(warmup, 4),
        "probe_seconds": round(time.perf_counter() - started, 4),
    }
