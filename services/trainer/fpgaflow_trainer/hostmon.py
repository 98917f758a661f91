"""Host resources sampled while training: memory, this process's RSS, free disk, CPU time, GPU memory.

``HostSampler`` samples on a daemon thread (a first sample at start, then every ``interval_seconds``,
a last one at stop) into a list for host.json, and into TrainingMetrics' gauges when given them. A sample
reads a few /proc files and statvfs (tens of microseconds); TensorFlow is asked only when a GPU is present.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from pathlib import Path

from fpgaflow.provenance import memory_bytes
from fpgaflow_trainer.preconditions import available_memory_bytes, free_disk_bytes

MAX_SAMPLES = 2000  # beyond this the kept samples are thinned to every other one (peaks are kept exactly)


def rss_bytes(status: Path = Path("/proc/self/status")) -> int | None:
    """This process's resident set size (VmRSS), else its peak RSS from getrusage."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def gpu_names() -> list[str]:
    """GPUs TensorFlow lists, asked only when TensorFlow is already imported (no import for a sampler)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return []
    try:
        return [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:
        return []


def gpu_memory(device: str = "GPU:0") -> dict | None:
    """{"current", "peak"} bytes TensorFlow holds on ``device``; None where it cannot say."""
    tf = sys.modules.get("tensorflow")
    try:
        info = tf.config.experimental.get_memory_info(device)
    except Exception:
        return None
    return {"current": int(info["current"]), "peak": int(info["peak"])}


def sample(folder: Path, t0: float, gpu: bool) -> dict:
    """One reading: seconds since ``t0``, host memory used/available, RSS, free disk of ``folder``, CPU seconds."""
    host = memory_bytes()
    used = host["total"] - host["available"] if host["total"] is not None and host["available"] is not None else None
    row = {
        "t": round(time.monotonic() - t0, 3),
        "memory_used_bytes": used,
        "memory_available_bytes": available_memory_bytes(),
        "rss_bytes": rss_bytes(),
        "disk_free_bytes": free_disk_bytes(folder),
        "cpu_seconds": round(time.process_time(), 3),
    }
    if gpu:
        info = gpu_memory()
        row["gpu_memory_bytes"] = info["current"] if info else None
        row["gpu_peak_bytes"] = info["peak"] if info else None
    return row


def _extreme(rows: list[dict], key: str, pick) -> int | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return pick(values) if values else None


class HostSampler:
    """Samples the host every ``interval_seconds`` on a daemon thread until ``stop()``; a context manager.

    ``gpus``: the GPU names (None: asked of TensorFlow if imported). ``metrics``: a TrainingMetrics whose
    ``observe_host`` gets every sample.
    """

    def __init__(self, folder: Path, interval_seconds: float = 5, metrics=None, gpus: list[str] | None = None,
                 max_samples: int = MAX_SAMPLES):
        self.folder, self.interval, self.metrics = Path(folder), float(interval_seconds), metrics
        self.gpu = bool(gpu_names() if gpus is None else gpus)
        self.max_samples = max(2, max_samples)
        self.samples: list[dict] = []
        self._peaks: dict = {}  # extremes over every sample, exact after thinning
        self._keep_every, self._count = 1, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: dict | None = None
        self._t0 = time.monotonic()

    def _take(self, keep: bool = False) -> None:
        row = sample(self.folder, self._t0, self.gpu)
        self._peaks = self._fold([self._peaks, row])
        if keep or self._count % self._keep_every == 0:
            self.samples.append(row)
            if len(self.samples) > self.max_samples:
                self.samples, self._keep_every = self.samples[::2], self._keep_every * 2
        self._count += 1
        if self.metrics is not None:
            self.metrics.observe_host(row)

    @staticmethod
    def _fold(rows: list[dict]) -> dict:
        """One row holding the extremes so far (max RSS and GPU, min available memory and free disk)."""
        return {
            "rss_bytes": _extreme(rows, "rss_bytes", max),
            "memory_available_bytes": _extreme(rows, "memory_available_bytes", min),
            "disk_free_bytes": _extreme(rows, "disk_free_bytes", min),
            "gpu_peak_bytes": max([v for r in rows for v in (r.get("gpu_peak_bytes"), r.get("gpu_memory_bytes"))
                                   if v is not None], default=None),
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._take()
            except Exception as exc:  # sampling never takes training down
                print(f"hostmon: sampling stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
                return

    def start(self) -> HostSampler:
        if self._thread is None and self._summary is None:
            self._t0 = time.monotonic()
            self._take()
            self._thread = threading.Thread(target=self._loop, name="fpgaflow-hostmon", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict:
        """Stops sampling (a last sample first) and returns the samples and extremes; again: the same dict."""
        if self._summary is None:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
                self._take(keep=True)
            peaks = self._peaks
            self._summary = {
                "interval_seconds": self.interval,
                "samples": self.samples,
                "peak_rss_bytes": peaks.get("rss_bytes"),
                "min_available_memory_bytes": peaks.get("memory_available_bytes"),
                "min_free_disk_bytes": peaks.get("disk_free_bytes"),
                "gpu_peak_bytes": peaks.get("gpu_peak_bytes") if self.gpu else None,
            }
        return self._summary

    def __enter__(self) -> HostSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
