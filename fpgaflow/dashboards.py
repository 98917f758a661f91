"""The Grafana dashboard of the CPU/GPU/FPGA comparison, built from its panels' PromQL.

``make generate`` writes it into the chart (``charts/fpgaflow/dashboards/``), where a ConfigMap with
the ``grafana_dashboard`` label carries it to Grafana's sidecar; a test runs every panel's query
against a real Prometheus scraping real fpgaflow servers and a training run.

Template variables: ``$datasource`` (any Prometheus), ``$model`` (served models) and ``$experiment``
(experiments with training metrics); "All" is the regex ``.*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DASHBOARD_PATH = Path("charts/fpgaflow/dashboards/fpgaflow-comparison.json")
UID = "fpgaflow-comparison"
ALL = ".*"
SERVED = 'model=~"$model"'
INFERENCE = SERVED + ', method=~"Predict|ModelInfer"'  # the two protocols' inference calls, not metadata or liveness
ANSWERED = INFERENCE + ', code="OK"'
FAILED = SERVED + ', code!="OK"'
FPGA = SERVED + ', target="fpga"'
TRAINING = 'experiment=~"$experiment"'
WINDOW = "$__rate_interval"


def _rate(metric: str, selector: str = SERVED) -> str:
    return f"rate({metric}{{{selector}}}[{WINDOW}])"


def _quantile(q: float, metric: str, by: str = "target", selector: str = SERVED) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({_rate(metric + '_bucket', selector)}))"


def _mean(metric: str, selector: str = SERVED, by: str = "target") -> str:
    return f"sum by ({by}) ({_rate(metric + '_sum', selector)}) / sum by ({by}) ({_rate(metric + '_count', selector)})"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    options: dict = field(default_factory=dict)


SERVING = (
    Panel("Request latency p50 by target", "Median time from receiving an inference request (TF Serving Predict, "
          "v2 ModelInfer) to answering it, per serving target.",
          (Query(_quantile(0.5, "fpgaflow_request_duration_seconds", selector=INFERENCE), "{{target}} p50"),), unit="s"),
    Panel("Request latency p99 by target", "99th percentile of the inference request latency, per serving target.",
          (Query(_quantile(0.99, "fpgaflow_request_duration_seconds", selector=INFERENCE), "{{target}} p99"),), unit="s"),
    Panel("Throughput by target", "Answered inference requests and samples per second.",
          (Query(f'sum by (target) ({_rate("fpgaflow_requests_total", ANSWERED)})',
                 "{{target}} requests/s"),
           Query(f'sum by (target) ({_rate("fpgaflow_batch_size_sum")})', "{{target}} samples/s")), unit="reqps"),
    Panel("Batch size by target", "Samples per back-end call: the mean and the 99th percentile.",
          (Query(_mean("fpgaflow_batch_size"), "{{target}} mean"),
           Query(_quantile(0.99, "fpgaflow_batch_size"), "{{target}} p99"))),
    Panel("Errors by code", "Requests answered with a gRPC status other than OK, per second, by target and code.",
          (Query(f'sum by (target, code) ({_rate("fpgaflow_requests_total", FAILED)})',
                 "{{target}} {{code}}"),), unit="reqps"),
    Panel("FPGA: modelled device latency vs measured time",
          "The converter's timing model of the firmware (latency + (batch - 1) x II at the clock) beside the "
          "emulator's measured compute time and the request latency of the fpga target.",
          (Query(_mean("fpgaflow_device_latency_seconds", FPGA), "modelled device time per batch"),
           Query(_mean("fpgaflow_compute_duration_seconds", FPGA), "measured emulation time per batch"),
           Query(_mean("fpgaflow_request_duration_seconds", INFERENCE + ', target="fpga"'), "measured request latency")),
          unit="s"),
    Panel("Requests in flight", "Requests being handled now, per target.",
          (Query(f"sum by (target) (fpgaflow_requests_in_flight{{{SERVED}}})", "{{target}}"),)),
    Panel("Compute time by target", "Mean time the back end spends on one batch.",
          (Query(_mean("fpgaflow_compute_duration_seconds"), "{{target}}"),), unit="s"),
    Panel("Queue time by target", "Time a validated request waits for its batch to start computing (dynamic "
          "batching gathers requests for up to serve.batching.maxLatencyMicros; without it, the wait for a free worker).",
          (Query(_quantile(0.5, "fpgaflow_queue_duration_seconds"), "{{target}} p50"),
           Query(_quantile(0.99, "fpgaflow_queue_duration_seconds"), "{{target}} p99")), unit="s"),
)

TRAINING_PANELS = (
    Panel("Training progress", "Epochs finished of those asked for, per running trial.",
          (Query(f"fpgaflow_train_epoch{{{TRAINING}}} / fpgaflow_train_epochs_planned{{{TRAINING}}}",
                 "{{experiment}}/{{trial}}"),), unit="percentunit", kind="bargauge", width=6,
          options={"min": 0, "max": 1}),
    Panel("Training throughput", "Training samples per second in the last epoch.",
          (Query(f"fpgaflow_train_samples_per_second{{{TRAINING}}}", "{{experiment}}/{{trial}}"),), width=6),
    Panel("Training loss", "Loss at the end of each epoch, training and validation splits.",
          (Query(f"fpgaflow_train_loss{{{TRAINING}}}", "{{experiment}}/{{trial}} {{split}}"),), width=6),
    Panel("Training accuracy", "Accuracy at the end of each epoch, training and validation splits.",
          (Query(f"fpgaflow_train_accuracy{{{TRAINING}}}", "{{experiment}}/{{trial}} {{split}}"),),
          unit="percentunit", width=6),
    Panel("Trainer memory", "Resident memory of each running trainer, and the memory still available where it runs.",
          (Query(f"fpgaflow_train_process_rss_bytes{{{TRAINING}}}", "{{experiment}}/{{trial}} resident"),
           Query(f"fpgaflow_train_host_memory_available_bytes{{{TRAINING}}}", "{{experiment}}/{{trial}} available")),
          unit="bytes", width=12),
    Panel("Trainer disk", "Free space of the file system holding each running trial's folder.",
          (Query(f"fpgaflow_train_disk_free_bytes{{{TRAINING}}}", "{{experiment}}/{{trial}}"),), unit="bytes", width=12),
)

ROWS = (("Serving: CPU / GPU / FPGA", SERVING), ("Training", TRAINING_PANELS))


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": panel.unit}
    defaults.update(panel.options)
    doc = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": q.expr, "legendFormat": q.legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, q in enumerate(panel.queries)
        ],
    }
    if panel.kind == "timeseries":
        doc["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi"}}
    return doc


def _variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-values"}, "definition": query, "refresh": 2,
        "includeAll": True, "multi": True, "allValue": ALL, "current": {"text": "All", "value": "$__all"}, "sort": 1,
    }


def dashboard() -> dict:
    panels, panel_id, y = [], 1, 0
    for title, row in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id, x = panel_id + 1, x + panel.width
        y += 8
    return {
        "uid": UID,
        "title": "fpgaflow: CPU / GPU / FPGA comparison",
        "description": "Latency, throughput, batch size and errors of the fpgaflow serving targets side by side, "
                       "the FPGA target's modelled device latency, and the training metrics of running trials.",
        "tags": ["fpgaflow", "hls4ml", "inference"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("model", "Model", "label_values(fpgaflow_server_info, model)"),
            _variable("experiment", "Experiment", "label_values(fpgaflow_train_epoch, experiment)"),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def panel_queries(doc: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of a dashboard document."""
    return [(p["title"], t["refId"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def rendered() -> dict[Path, str]:
    return {DASHBOARD_PATH: json.dumps(dashboard(), indent=2) + "\n"}
