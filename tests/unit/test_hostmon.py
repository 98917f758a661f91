"""Host resources sampled while training: samples, peaks, the Prometheus gauges, stop."""

import time

from fpgaflow_trainer import hostmon
from fpgaflow_trainer.hostmon import HostSampler, rss_bytes, sample
from fpgaflow_trainer.monitor import TrainingMetrics


def test_sampler_collects_samples_peaks_and_gauges(tmp_path):
    metrics = TrainingMetrics("jets", "t0")
    with HostSampler(tmp_path, interval_seconds=0.02, metrics=metrics, gpus=[]) as sampler:
        ballast = bytearray(64 * 2**20)  # touched memory: the process's RSS grows while sampled
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        time.sleep(0.15)
    summary = sampler.stop()
    rows = summary["samples"]
    assert len(rows) >= 2 and summary["interval_seconds"] == 0.02
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows) and rows[0]["t"] < 0.05
    assert all(r["rss_bytes"] > 0 and r["disk_free_bytes"] > 0 and r["memory_available_bytes"] > 0 for r in rows)
    assert rows[-1]["cpu_seconds"] >= rows[0]["cpu_seconds"] > 0
    assert summary["peak_rss_bytes"] == max(r["rss_bytes"] for r in rows)
    assert summary["peak_rss_bytes"] >= rows[0]["rss_bytes"] + 32 * 2**20
    assert summary["min_available_memory_bytes"] == min(r["memory_available_bytes"] for r in rows)
    assert summary["min_free_disk_bytes"] == min(r["disk_free_bytes"] for r in rows)
    assert summary["gpu_peak_bytes"] is None and "gpu_memory_bytes" not in rows[0]  # no GPU: not asked
    read = metrics.registry.get_sample_value
    labels = {"experiment": "jets", "trial": "t0"}
    assert read("fpgaflow_train_process_rss_bytes", labels) == rows[-1]["rss_bytes"]
    assert read("fpgaflow_train_host_memory_available_bytes", labels) == rows[-1]["memory_available_bytes"]
    assert read("fpgaflow_train_disk_free_bytes", labels) == rows[-1]["disk_free_bytes"]
    assert read("fpgaflow_train_gpu_memory_bytes", labels) is None  # never set without a GPU
    del ballast


def test_stop_is_idempotent_and_ends_the_thread(tmp_path):
    sampler = HostSampler(tmp_path, interval_seconds=0.01, gpus=[]).start()
    time.sleep(0.05)
    first = sampler.stop()
    count = len(first["samples"])
    time.sleep(0.05)
    assert sampler.stop() is first and len(first["samples"]) == count
    assert not sampler._thread.is_alive()
    assert HostSampler(tmp_path, gpus=[]).stop()["samples"] == []  # never started


def test_kept_samples_are_thinned_but_peaks_stay_exact(tmp_path, monkeypatch):
    readings = iter([{"t": i, "rss_bytes": 10_000 if i == 5 else 100 + i, "disk_free_bytes": 50 if i == 7 else 1000,
                      "memory_available_bytes": 1 if i == 9 else 500} for i in range(30)])
    monkeypatch.setattr(hostmon, "sample", lambda folder, t0, gpu: next(readings))
    sampler = HostSampler(tmp_path, interval_seconds=3600, gpus=[], max_samples=4).start()
    for _ in range(20):
        sampler._take()
    summary = sampler.stop()
    kept = [r["t"] for r in summary["samples"]]
    assert len(kept) <= 5 and kept[0] == 0 and kept[-1] == 21 and 5 not in kept  # the last one always kept
    assert (summary["peak_rss_bytes"], summary["min_free_disk_bytes"], summary["min_available_memory_bytes"]) == (10_000, 50, 1)


def test_one_sample_is_cheap(tmp_path):
    rss_bytes()
    started = time.perf_counter()
    for _ in range(100):
        sample(tmp_path, started, gpu=False)
    assert (time.perf_counter() - started) / 100 < 0.002


def test_gpu_memory_is_sampled_when_a_gpu_is_present(tmp_path, monkeypatch):
    held = iter([{"current": 1000, "peak": 4000}, {"current": 3000, "peak": 9000}, {"current": 2000, "peak": 9000}])
    monkeypatch.setattr(hostmon, "gpu_memory", lambda device="GPU:0": next(held))
    metrics = TrainingMetrics("jets", "t1")
    sampler = HostSampler(tmp_path, interval_seconds=3600, metrics=metrics, gpus=["/physical_device:GPU:0"]).start()
    sampler._take()
    summary = sampler.stop()
    assert [r["gpu_memory_bytes"] for r in summary["samples"]] == [1000, 3000, 2000]
    assert summary["gpu_peak_bytes"] == 9000
    assert metrics.registry.get_sample_value("fpgaflow_train_gpu_memory_bytes", {"experiment": "jets", "trial": "t1"}) == 2000
