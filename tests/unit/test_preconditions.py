"""Preconditions of the train stage: each shortfall refuses the run naming it; the duration estimate."""

import math
import random
import time

import numpy as np
import pytest

from fpgaflow.errors import PreconditionFailed
from fpgaflow.spec import PreconditionsSpec
from fpgaflow_trainer import preconditions as pre
from fpgaflow_trainer.preconditions import (
    available_memory_bytes,
    cgroup_headroom_bytes,
    check,
    estimate_training_seconds,
    human_bytes,
    measure,
    shortfalls,
)

GiB = 2**30
PLENTY = {"folder": "/trial", "free_disk_bytes": 500 * GiB, "available_memory_bytes": 64 * GiB,
          "gpus": ["/physical_device:GPU:0"], "estimate_seconds": 60.0}
ASKING = PreconditionsSpec(min_free_disk="2Gi", min_free_memory="4Gi", gpu=True, max_duration="1h30m")


def test_human_units():
    assert human_bytes(2 * GiB) == "2 GiB" and human_bytes(1.2 * GiB) == "1.2 GiB" and human_bytes(512) == "512 B"
    assert pre.human_seconds(5400) == "1h30m" and pre.human_seconds(75.4) == "1m15s"


@pytest.mark.parametrize("fact, value, names", [
    ("free_disk_bytes", int(1.2 * GiB), ["free disk in /trial: 1.2 GiB", "at least 2 GiB", "preconditions.minFreeDisk"]),
    ("available_memory_bytes", 3 * GiB, ["available memory: 3 GiB", "at least 4 GiB", "preconditions.minFreeMemory"]),
    ("gpus", [], ["GPU", "preconditions.gpu"]),
    ("estimate_seconds", 2 * 3600 + 5 * 60, ["estimated training time: 2h5m", "at most 1h30m", "preconditions.maxDuration"]),
])
def test_each_shortfall_refuses_naming_it(tmp_path, monkeypatch, fact, value, names):
    facts = {**PLENTY, fact: value}
    found = shortfalls(ASKING, facts)
    assert len(found) == 1 and all(n in found[0] for n in names), found
    monkeypatch.setattr(pre, "measure", lambda folder, gpus, estimate_seconds=None, dataset=None: {**facts, "folder": str(folder)})
    with pytest.raises(PreconditionFailed) as refused:
        check(ASKING, tmp_path, facts["gpus"], facts["estimate_seconds"])
    assert refused.value.reason == "PreconditionFailed"
    assert names[-1] in str(refused.value)


def test_several_shortfalls_are_all_listed(tmp_path, monkeypatch):
    facts = {"folder": "/trial", "free_disk_bytes": GiB, "available_memory_bytes": GiB, "gpus": [],
             "estimate_seconds": 6000.0}
    assert len(shortfalls(ASKING, facts)) == 4
    monkeypatch.setattr(pre, "measure", lambda folder, gpus, estimate_seconds=None, dataset=None: facts)
    with pytest.raises(PreconditionFailed) as refused:
        check(ASKING, tmp_path, [], 6000.0)
    for key in ("minFreeDisk", "minFreeMemory", "preconditions.gpu", "maxDuration"):
        assert key in str(refused.value)


def test_a_simulated_set_the_cache_cannot_hold_is_refused_whatever_the_spec_asks(tmp_path):
    facts = {**PLENTY, "dataset_cache": "/store/datasets", "dataset_bytes": 40 * 2**20, "dataset_free_bytes": 50 * 2**20}
    found = shortfalls(PreconditionsSpec(), facts)
    assert found == ["free disk in the data-set cache /store/datasets: 50 MiB, the simulated data set needs about "
                     "60 MiB there (free some, or choose fewer samples or another cache: $FPGAFLOW_DATASETS)"]
    assert shortfalls(PreconditionsSpec(), {**facts, "dataset_free_bytes": 61 * 2**20}) == []
    measured = measure(tmp_path, [], dataset=(tmp_path / "datasets", 10**6))
    assert measured["dataset_cache"] == str(tmp_path / "datasets") and measured["dataset_free_bytes"] > 0
    assert "dataset_bytes" not in measure(tmp_path, [], dataset=(tmp_path / "datasets", 0)), "nothing to make"


def test_nothing_asked_nothing_refused(tmp_path):
    starved = {"folder": "/trial", "free_disk_bytes": 0, "available_memory_bytes": 0, "gpus": [], "estimate_seconds": 1e9}
    assert shortfalls(PreconditionsSpec(), starved) == []
    facts = check(PreconditionsSpec(), tmp_path, [], None)  # the real host, nothing asked
    assert facts["free_disk_bytes"] > 0 and facts["available_memory_bytes"] > 0
    unmeasured = {**PLENTY, "free_disk_bytes": None, "available_memory_bytes": None, "estimate_seconds": None}
    assert shortfalls(ASKING, unmeasured) == []  # what could not be measured refuses nothing


def test_the_real_host_is_measured(tmp_path):
    facts = measure(tmp_path / "not-yet", ["gpu0"], 12.0)
    assert facts["free_disk_bytes"] > 0 and facts["gpus"] == ["gpu0"] and facts["estimate_seconds"] == 12.0
    huge = PreconditionsSpec(min_free_disk="1000000Ti", min_free_memory="1000000Ti")
    with pytest.raises(PreconditionFailed, match="minFreeDisk.*minFreeMemory"):
        check(huge, tmp_path, [], None)


def _cgroup(tmp_path, files: dict) -> tuple:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    self_cgroup = tmp_path / "self.cgroup"
    self_cgroup.write_text("0::/\n")
    return tmp_path, self_cgroup


def test_cgroup_limit_caps_available_memory(tmp_path):
    v2 = _cgroup(tmp_path / "v2", {"memory.max": str(3 * GiB), "memory.current": str(2 * GiB),
                                   "memory.stat": f"anon 1\ninactive_file {GiB // 2}\n"})
    assert cgroup_headroom_bytes(*v2) == 3 * GiB - (2 * GiB - GiB // 2)
    assert available_memory_bytes(*v2) <= cgroup_headroom_bytes(*v2)
    unlimited = _cgroup(tmp_path / "v2max", {"memory.max": "max", "memory.current": str(GiB)})
    assert cgroup_headroom_bytes(*unlimited) is None
    v1 = _cgroup(tmp_path / "v1", {"memory/memory.limit_in_bytes": str(4 * GiB), "memory/memory.usage_in_bytes": str(GiB)})
    assert cgroup_headroom_bytes(*v1) == 3 * GiB
    v1_unlimited = _cgroup(tmp_path / "v1max", {"memory/memory.limit_in_bytes": "9223372036854771712",
                                                "memory/memory.usage_in_bytes": str(GiB)})
    assert cgroup_headroom_bytes(*v1_unlimited) is None
    assert cgroup_headroom_bytes(tmp_path / "nothing", tmp_path / "nothing" / "cgroup") is None


def _mlp():
    import keras

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(5, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(6000, 16)).astype("float32"), rng.integers(0, 5, 6000)


@pytest.mark.slow
def test_estimate_leaves_the_model_and_random_state_untouched():
    model, x, y = _mlp()
    weights = [w.copy() for w in model.get_weights()]
    py, npy = random.getstate(), np.random.get_state()[1].copy()
    estimate = estimate_training_seconds(model, x, y, batch_size=256, epochs=2, validation_fraction=0.2)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert int(model.optimizer.iterations.numpy()) == 0  # the clone had its own optimizer
    assert random.getstate() == py and np.array_equal(np.random.get_state()[1], npy)
    assert estimate["seconds"] > 0 and estimate["batches_per_epoch"] == 19 and estimate["validation_batches_per_epoch"] == 5


@pytest.mark.slow
def test_estimate_is_near_the_time_of_fitting():
    model, x, y = _mlp()
    started = time.perf_counter()
    estimate = estimate_training_seconds(model, x, y, batch_size=128, epochs=3, validation_fraction=0.2)
    probe = time.perf_counter() - started
    started = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=3, validation_split=0.2, verbose=0)
    fitted = time.perf_counter() - started
    assert math.isfinite(estimate["seconds"]) and estimate["seconds"] > 0
    assert fitted / 3 <= estimate["seconds"] <= fitted * 3, (estimate, fitted)
    assert probe < 3, probe  # cheap next to training (about half a second here, mostly tracing)
