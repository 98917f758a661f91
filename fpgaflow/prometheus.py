"""A Prometheus of one local run: it scrapes the run's trainers and servers while they run, so the
dashboards' PromQL works during a local run as it does on a cluster, and it leaves a record.

Debian's ``prometheus`` binary runs on a free loopback port with its data in the experiment's folder
(``prometheus/``). Its targets come from file_sd JSON files that this class rewrites as processes
start and stop: Prometheus watches them (inotify) and applies a change within about 5-10 s, as its
discovery and scrape managers each apply updates at most every 5 s. Callers that must not miss a
short-lived target therefore wait until Prometheus knows it (``await_target``) or has scraped it
(``await_scrape``).

At the end of a run ``summarize_run`` evaluates every dashboard panel's queries over the run's window
(``panels.json``), and writes their series as CSV and a plot of the serving and training panels.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from fpgaflow.errors import FpgaflowError

SCRAPE_SECONDS = 1  # several scrapes even of a short local run
TRAINING_JOB = "fpgaflow-training"
SERVERS_JOB = "fpgaflow-servers"
JOBS = (TRAINING_JOB, SERVERS_JOB)
NOT_INSTALLED = "live metrics are off: prometheus is not installed (`apt-get install prometheus`)"
# the panels of the summary plot: (panel title, index of its query, y label, scale of the values)
PLOTTED = (("Throughput by target", 0, "requests/s", 1.0), ("Request latency p99 by target", 0, "p99 latency (ms)", 1e3),
           ("Training loss", 0, "loss", 1.0), ("Training accuracy", 0, "accuracy", 1.0))


class PrometheusError(FpgaflowError):
    """Prometheus did not start or did not answer."""

    def __init__(self, message: str):
        super().__init__(message, reason="PrometheusFailed")


# ------------------------------------------------------------------------------------------ pure parts


def prometheus_binary(enabled: bool) -> tuple[str | None, str | None]:
    """The binary to run and, when there is none to run, what to tell the user (None when they turned it off)."""
    if not enabled:
        return None, None
    binary = shutil.which("prometheus")
    return (binary, None) if binary else (None, NOT_INSTALLED)


def scrape_config(targets_dir: Path, jobs: tuple[str, ...] = JOBS, interval: float = SCRAPE_SECONDS) -> dict:
    """prometheus.yml: every job reads its targets from ``<targets_dir>/<job>.json``, re-read whenever it
    changes. honor_labels keeps the metrics' own labels (trial, experiment) where a target's labels repeat them.
    The paths are absolute: Prometheus reads relative ones from its config file's folder."""
    every = f"{interval:g}s"
    targets_dir = Path(targets_dir).resolve()
    return {
        "global": {"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": every},
        "scrape_configs": [{"job_name": job, "honor_labels": True,
                            "file_sd_configs": [{"files": [str(targets_dir / f"{job}.json")], "refresh_interval": "30s"}]}
                           for job in jobs],
    }


def target_groups(targets: dict[str, dict[str, str]]) -> list[dict]:
    """A file_sd document: one group per address (host:port) with its labels, in address order."""
    return [{"targets": [address], "labels": dict(sorted(labels.items()))} for address, labels in sorted(targets.items())]


def substitute(expr: str, model: str = ".*", experiment: str = ".*", rate_window: str = "10s") -> str:
    """A dashboard query as Grafana sends it: the template variables replaced by values."""
    return expr.replace("$model", model).replace("$experiment", experiment).replace("$__rate_interval", rate_window)


def query_step(start: float, end: float, interval: float = SCRAPE_SECONDS, points: int = 1000) -> int:
    """Seconds between the points of a range query: a scrape interval, or coarser so that a long run has ``points``."""
    return max(math.ceil(interval), math.ceil((end - start) / points))


def rate_window(step: float, interval: float = SCRAPE_SECONDS) -> str:
    """$__rate_interval as Grafana computes it for a data source scraped every ``interval``: the larger of
    4 scrapes and step + 1 scrape (4 s at 1 s scrapes, short enough to show a benchmark of a few seconds)."""
    return f"{math.ceil(max(4 * interval, step + interval))}s"


def address_of(url: str) -> str:
    """host:port of a metrics URL (http://127.0.0.1:9100/metrics), as Prometheus names the target (its instance)."""
    return urllib.parse.urlparse(url).netloc


def legend(fmt: str, metric: dict[str, str]) -> str:
    """A Grafana legend format ("{{target}} p99") filled in with a series' labels."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip() or json.dumps(metric)


def numbers(series: dict) -> list[tuple[float, float]]:
    """(time, value) of a range query's series, without NaN and infinities (e.g. a quantile of no requests)."""
    points = [(float(t), float(v)) for t, v in series.get("values", [])]
    return [(t, v) for t, v in points if math.isfinite(v)]


def panel_rows(panels: dict, start: float) -> list[dict]:
    """panels.json's series as CSV rows: panel, legend, time, seconds since the start, value."""
    rows: list[dict] = []
    for title, queries in panels.items():
        for query in queries.values():
            for series in query["series"]:
                name = legend(query["legend"], series["metric"])
                rows.extend({"panel": title, "series": name, "time": t, "seconds": round(t - start, 3), "value": v}
                            for t, v in numbers(series))
    return rows


# ------------------------------------------------------------------------------------------ the server


class LocalPrometheus:
    """Prometheus on a free loopback port, data and config in ``folder``, targets added and removed while it runs.

    ``targets`` ({job: {address: labels}}) are scraped from the start; ``add_target`` adds more later.
    ``scrape_configs`` are more jobs, as prometheus.yml writes them (e.g. with Kubernetes service discovery).
    ``with LocalPrometheus(folder) as prom:`` stops it on leaving; otherwise call ``stop()``."""

    def __init__(self, folder: Path, targets: dict[str, dict[str, dict[str, str]]] | None = None,
                 jobs: tuple[str, ...] = JOBS, interval: float = SCRAPE_SECONDS,
                 binary: str | None = None, host: str = "127.0.0.1", start_timeout: float = 60.0,
                 scrape_configs: tuple[dict, ...] = ()):
        from fpgaflow.processes import free_port

        # absolute: Prometheus reads file_sd paths relative to its config file, not to where it was started
        self.folder, self.jobs, self.interval, self.host = Path(folder).resolve(), jobs, interval, host
        found = binary or shutil.which("prometheus")
        if found is None:
            raise PrometheusError(NOT_INSTALLED)
        self.binary: str = found
        self.targets_dir = self.folder / "targets"
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self._targets = {job: dict((targets or {}).get(job, {})) for job in jobs}
        self._lock = threading.Lock()
        for job in jobs:  # (an earlier run's targets are gone)
            self._write(job)
        self.config = self.folder / "prometheus.yml"
        config = scrape_config(self.targets_dir, jobs, interval)
        config["scrape_configs"] += list(scrape_configs)
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = self.folder / "prometheus.log"
        for _ in range(3):  # another process may take the free port before Prometheus binds it
            self.port = free_port(host)
            self.url = f"http://{host}:{self.port}"
            logged = self.log.stat().st_size if self.log.exists() else 0
            self.proc = self._launch()
            if self._await_ready(start_timeout):
                self.started = time.time()
                return
            if "address already in use" not in self._log_tail(logged):
                break
        raise PrometheusError(f"prometheus did not start; the end of {self.log}:\n{self._log_tail(logged)}")

    def _launch(self) -> subprocess.Popen:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address={self.host}:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _await_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        return False

    def _log_tail(self, since: int = 0) -> str:
        """The last lines this Prometheus logged (from byte ``since``: the log is appended to run after run)."""
        return self.log.read_bytes()[since:][-2000:].decode(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> LocalPrometheus:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- targets
    def _write(self, job: str) -> None:
        """Replace the job's file at once (write, then rename), so that Prometheus never reads half of it."""
        path = self.targets_dir / f"{job}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(target_groups(self._targets[job]), indent=1))
        os.replace(tmp, path)

    def add_target(self, job: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape ``address`` (host:port) as part of ``job`` from now on (after Prometheus notices, within ~10 s)."""
        with self._lock:
            self._targets[job][address] = dict(labels or {})
            self._write(job)

    def remove_target(self, job: str, address: str) -> None:
        with self._lock:
            if self._targets[job].pop(address, None) is not None:
                self._write(job)

    def active_targets(self) -> list[dict]:
        return self._get("/api/v1/targets", {"state": "active"})["activeTargets"]

    def await_target(self, address: str, timeout: float = 20.0) -> bool:
        """Wait until Prometheus has taken up the target (it scrapes it from then on, up or not).
        False when it has not within ``timeout``, or Prometheus stopped answering."""
        return self._await(lambda: any(t["labels"].get("instance") == address for t in self.active_targets()), timeout)

    def await_scrape(self, address: str, after: float, timeout: float = 20.0) -> bool:
        """Wait until a scrape of ``address`` that started at ``after`` (Unix time) or later succeeded."""
        up = f'up{{instance="{address}"}}'

        def scraped() -> bool:
            result = self.query(f"timestamp({up}) and {up} == 1")  # the time of the last scrape, if it succeeded
            return bool(result) and float(result[0]["value"][1]) >= after

        return self._await(scraped, timeout)

    def _await(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return True
            except PrometheusError:
                return False
            time.sleep(0.2)
        return False

    # ---------------------------------------------------------------- queries
    def _get(self, path: str, params: dict) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
            body = json.loads(exc.read() or b"{}")
        except OSError as exc:
            raise PrometheusError(f"prometheus at {self.url} did not answer: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"prometheus refused {params.get('query', path)!r}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query (now, or at Unix time ``at``): [{"metric": labels, "value": [t, "v"]}, ...]."""
        return self._get("/api/v1/query", {"query": expr, **({"time": at} if at is not None else {})})["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1) -> list[dict]:
        """A range query as Grafana sends it: [{"metric": labels, "values": [[t, "v"], ...]}, ...]."""
        return self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})["result"]

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (Prometheus flushes its head block and exits), SIGKILL if it takes longer than ``grace``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------ the run's record


def evaluate_panels(prom: LocalPrometheus, doc: dict, experiment: str, start: float, end: float) -> dict:
    """Every panel's queries over [start, end], as the dashboard would show this run:
    {title: {refId: {"expr", "legend", "series"}}}, series as Prometheus returns them."""
    step = query_step(start, end, prom.interval)
    window = rate_window(step, prom.interval)
    panels: dict[str, dict] = {}
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = substitute(target["expr"], experiment=experiment, rate_window=window)
            panels.setdefault(panel["title"], {})[target["refId"]] = {
                "expr": expr, "legend": target.get("legendFormat", ""), "series": prom.query_range(expr, start, end, step)}
    return panels


def plot_run(panels: dict, path: Path, title: str, start: float) -> None:
    """The serving and training panels of the run over time, one line per series."""
    from fpgaflow.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for ax, (panel, index, label, scale) in zip(axes.flat, PLOTTED, strict=True):
        queries = list(panels.get(panel, {}).values())
        query: dict = queries[index] if index < len(queries) else {"series": [], "legend": ""}
        drawn = 0
        for series in query["series"]:
            points = numbers(series)
            if points:
                ax.plot([t - start for t, _ in points], [v * scale for _, v in points], marker=".", markersize=3,
                        label=legend(query["legend"], series["metric"]))
                drawn += 1
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("seconds since the run started")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize_run(prom: LocalPrometheus, experiment: str, start: float, end: float) -> dict[str, Path]:
    """panels.json, prometheus.csv and prometheus.png in the Prometheus folder; returns their paths."""
    from fpgaflow.dashboards import dashboard

    panels = evaluate_panels(prom, dashboard(), experiment, start, end)
    out = {"panels": prom.folder / "panels.json", "csv": prom.folder / "prometheus.csv", "plot": prom.folder / "prometheus.png"}
    out["panels"].write_text(json.dumps({"prometheus": prom.url, "experiment": experiment, "start": start, "end": end,
                                         "step": query_step(start, end, prom.interval), "panels": panels}, indent=1))
    with out["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["panel", "series", "time", "seconds", "value"])
        writer.writeheader()
        writer.writerows(panel_rows(panels, start))
    plot_run(panels, out["plot"], f"{experiment}: Prometheus view of the run", start)
    return out
