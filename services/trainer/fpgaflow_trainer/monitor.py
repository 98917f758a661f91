"""Live training metrics for Prometheus: fpgaflow_train_<thing>, labels experiment and trial (and split).

The trainer serves them on a port while it runs (``fpgaflow train --metrics-port``), so dashboards
show running trials; the Kubernetes train Job exposes that port to the scraper.
"""

from __future__ import annotations

import keras
from prometheus_client import CollectorRegistry, Gauge, start_http_server

SPLITS = {"": "train", "val_": "validation"}


class TrainingMetrics:
    def __init__(self, experiment: str, trial: str, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.labels = (experiment, trial)
        r, names = self.registry, ["experiment", "trial"]
        self.epoch = Gauge("fpgaflow_train_epoch", "Epochs finished.", names, registry=r)
        self.epochs_planned = Gauge("fpgaflow_train_epochs_planned", "Epochs the spec asks for.", names, registry=r)
        self.loss = Gauge("fpgaflow_train_loss", "Loss at the end of the last epoch.", [*names, "split"], registry=r)
        self.accuracy = Gauge("fpgaflow_train_accuracy", "Accuracy at the end of the last epoch.", [*names, "split"], registry=r)
        self.samples_per_second = Gauge(
            "fpgaflow_train_samples_per_second", "Training samples per second in the last epoch.", names, registry=r)
        self.learning_rate = Gauge("fpgaflow_train_learning_rate", "The optimizer's learning rate.", names, registry=r)
        self.host_memory_available = Gauge(
            "fpgaflow_train_host_memory_available_bytes", "Memory available to the trainer (host or cgroup).", names, registry=r)
        self.process_rss = Gauge("fpgaflow_train_process_rss_bytes", "The trainer process's resident memory.", names, registry=r)
        self.disk_free = Gauge("fpgaflow_train_disk_free_bytes", "Free disk in the trial folder's file system.", names, registry=r)
        self.gpu_memory = Gauge("fpgaflow_train_gpu_memory_bytes", "GPU memory TensorFlow holds (GPU:0).", names, registry=r)

    def start(self, epochs: int) -> None:
        self.epochs_planned.labels(*self.labels).set(epochs)
        self.epoch.labels(*self.labels).set(0)

    def observe_epoch(self, epoch: int, logs: dict, samples_per_second: float, learning_rate: float) -> None:
        self.epoch.labels(*self.labels).set(epoch)
        for prefix, split in SPLITS.items():
            if f"{prefix}loss" in logs:
                self.loss.labels(*self.labels, split).set(float(logs[f"{prefix}loss"]))
            if f"{prefix}accuracy" in logs:
                self.accuracy.labels(*self.labels, split).set(float(logs[f"{prefix}accuracy"]))
        self.samples_per_second.labels(*self.labels).set(samples_per_second)
        self.learning_rate.labels(*self.labels).set(learning_rate)

    def observe_host(self, sample: dict) -> None:
        """A HostSampler sample; readings it lacks (None, or no GPU) leave their gauge as it was."""
        for gauge, key in ((self.host_memory_available, "memory_available_bytes"), (self.process_rss, "rss_bytes"),
                           (self.disk_free, "disk_free_bytes"), (self.gpu_memory, "gpu_memory_bytes")):
            if sample.get(key) is not None:
                gauge.labels(*self.labels).set(sample[key])

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)


class MetricsReporter(keras.callbacks.Callback):
    """Feeds TrainingMetrics from the rows a history recorder (earlier in the callback list) just wrote."""

    def __init__(self, metrics: TrainingMetrics, epochs: int, samples_per_epoch: int, history: list[dict]):
        super().__init__()
        self.metrics, self.samples, self.history = metrics, samples_per_epoch, history
        metrics.start(epochs)

    def on_epoch_end(self, epoch, logs=None):
        row = self.history[-1]
        self.metrics.observe_epoch(epoch + 1, logs or {}, self.samples / max(row["epoch_seconds"], 1e-9), row["learning_rate"])
