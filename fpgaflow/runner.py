"""The local runner: one manifest, its trials, each stage a subprocess, servers on loopback ports.

The stages are the same commands the cluster runs (``fpgaflow <stage> --trial-dir D``); only who
starts them differs. Every child process is tracked and stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fpgaflow.errors import StageError, StaleResult
from fpgaflow.plan import Trial, plan_trials
from fpgaflow.processes import Launched, Launcher, Processes, free_port
from fpgaflow.provenance import git_info
from fpgaflow.report import write_report
from fpgaflow.spec import Experiment, spec_hash
from fpgaflow.store import RunStore
from fpgaflow.summary import experiment_facts, trial_summary
from fpgaflow.trial import BUILD_STAGES, TrialDir, read_json, write_json

if TYPE_CHECKING:
    from fpgaflow.prometheus import LocalPrometheus


@dataclass(frozen=True)
class RunSettings:
    home: Path
    host: str = "127.0.0.1"
    server_start_timeout: float = 300.0
    python: str = sys.executable
    replace: bool = False
    prometheus: bool = True  # a local Prometheus scrapes the run's trainers and servers (`fpgaflow run --no-prometheus`: off)
    git: dict | None = None  # the manifest folder's git state when the manifest came from elsewhere (fpgaflow server)
    # where the stages run: None, local subprocesses; a launcher (a batch system's, fpgaflow server's Slurm
    # executor) runs train and convert each as its own job, and serve-and-bench as one (`fpgaflow serve-bench`),
    # since the servers and their load generator share a machine
    stage_launcher: Launcher | None = None


ProgressFn = Callable[[str, str], None]  # (trial name, what it is doing now); trial "": a note about the whole run


class LocalRunner:
    def __init__(self, experiment: Experiment, manifest_path: Path, settings: RunSettings, progress: ProgressFn | None = None):
        self.experiment = experiment
        self.manifest_path = manifest_path
        self.settings = settings
        self.store = RunStore(settings.home)
        self.folder = self.store.experiment_dir(experiment.name)
        self.trials: list[Trial] = plan_trials(experiment.spec)
        self.procs = Processes()
        self.progress = progress or (lambda trial, what: None)
        self._bench_lock = threading.Lock()  # one benchmark at a time: they must not share the cores
        self.timeline: list[dict] = []  # what ran when, written beside the report
        self.prometheus: LocalPrometheus | None = None  # the run's Prometheus while it runs
        self.live_metrics: dict[str, Path] = {}  # what it left: panels.json, prometheus.csv, prometheus.png

    @classmethod
    def of_trial(cls, td: TrialDir, settings: RunSettings) -> LocalRunner:
        """The runner of the experiment that holds trial folder ``td`` (its experiment.json), to run one of its
        steps where the trial is (`fpgaflow serve-bench` in a batch job)."""
        from fpgaflow.spec import parse_experiment

        meta = read_json(td.root.parent / "experiment.json")
        experiment = parse_experiment(meta["manifest"], str(td.root.parent / "experiment.json"))
        return cls(experiment, Path(meta.get("manifest_path") or td.root.parent), settings)

    # ---------------------------------------------------------------- preparation
    def prepare(self) -> None:
        """Create or reopen the experiment's folder. The same spec resumes; a different one is refused."""
        digest = spec_hash(self.experiment.spec)
        meta_path = self.folder / "experiment.json"
        if meta_path.exists():
            old = read_json(meta_path)
            if old["spec_hash"] != digest:
                if not self.settings.replace:
                    raise StaleResult(
                        f"experiment {self.experiment.name!r} already ran with a different spec in {self.folder}; "
                        "rename it (metadata.name) or pass --replace to discard the old results"
                    )
                shutil.rmtree(self.folder)
        manifest = self.experiment.model_dump(mode="json", by_alias=True, exclude={"status"})
        git = self.settings.git if self.settings.git is not None else git_info(self.manifest_path.resolve().parent)
        write_json(meta_path, {"name": self.experiment.name, "spec_hash": digest, "manifest": manifest,
                               "manifest_path": str(self.manifest_path.resolve()), "git": git})
        self.store.upsert_experiment(self.experiment.name, digest, manifest, git, "Running")
        for trial in self.trials:
            TrialDir.create(self.folder / trial.name, self.experiment.name, trial.name, trial.parameters, trial.spec)
            self.store.update_trial(self.experiment.name, trial.name, trial.parameters, phase="Pending")

    # ---------------------------------------------------------------- stages
    def _stage(self, td: TrialDir, stage: str) -> None:
        """One stage command of the trial (``fpgaflow STAGE --trial-dir D``), or with a stage launcher the
        trial's serve-and-bench (``fpgaflow serve-bench``, whose result is the bench stage's)."""
        result = "bench" if stage == "serve-bench" else stage
        if td.done(result):
            return
        log = td.stage_dir("serve" if stage == "serve-bench" else stage) / "log.txt"
        cmd = [self.settings.python, "-m", "fpgaflow", stage, "--trial-dir", str(td.root)]
        prometheus = self.prometheus if stage == "train" else None
        scraped = self._scrape_training(prometheus, td, cmd) if prometheus else None
        started = time.time()
        proc = self.procs.start(cmd, log, self.settings.stage_launcher)
        while proc.poll() is None:
            self.progress(td.root.name, describe_stage(td, result))
            time.sleep(0.5)
        if prometheus and scraped:
            prometheus.remove_target(scraped[0], scraped[1])
        self.timeline.append({"trial": td.root.name, "stage": stage, "start": started, "end": time.time(),
                              "exit_code": proc.returncode})
        if proc.returncode != 0:
            said = last_line(log)  # what a stage that wrote no error said last (its launcher's reason, say)
            error = td.error(result) or {"reason": "StageFailed", "message": f"{stage} exited with {proc.returncode}"
                                         + (f": {said}" if said else "") + f"; see {log}"}
            raise StageError(error["message"], reason=error["reason"])

    def _start_server(self, td: TrialDir, target: str) -> tuple[Launched, dict]:
        port, metrics_port = free_port(self.settings.host), free_port(self.settings.host)
        out = td.stage_dir("serve") / target
        (out / "error.json").unlink(missing_ok=True)
        (out / "server.json").unlink(missing_ok=True)
        cmd = [self.settings.python, "-m", "fpgaflow", "serve", "--trial-dir", str(td.root), "--target", target,
               "--host", self.settings.host, "--port", str(port), "--metrics-port", str(metrics_port)]
        if self.prometheus:
            from fpgaflow.prometheus import SERVERS_JOB

            self.prometheus.add_target(SERVERS_JOB, f"{self.settings.host}:{metrics_port}",
                                       {"experiment": self.experiment.name, "trial": td.root.name})
        return self.procs.start(cmd, out / "log.txt"), {"address": f"{self.settings.host}:{port}",
                                                         "metrics": f"http://{self.settings.host}:{metrics_port}/metrics"}

    def _await_server(self, td: TrialDir, target: str, proc: Launched, endpoint: dict) -> dict:
        out = td.stage_dir("serve") / target
        deadline = time.monotonic() + self.settings.server_start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                error = td.error(f"serve/{target}") or {"reason": "Failed", "message": f"server exited with {proc.returncode}; see {out / 'log.txt'}"}
                status = "unavailable" if error["reason"] == "Unavailable" else "failed"
                return {"status": status, "reason": error["message"]}
            if (out / "server.json").exists():  # written once the server answers (health SERVING)
                info = read_json(out / "server.json")
                return {"status": "ready", **endpoint, "backend": info.get("backend", "")}
            self.progress(td.root.name, f"serve: starting {target}")
            time.sleep(0.5)
        return {"status": "failed", "reason": f"not ready within {self.settings.server_start_timeout:.0f} s; see {out / 'log.txt'}"}

    def _serve_and_bench(self, td: TrialDir, trial: Trial) -> None:
        if td.done("bench"):
            return
        if self.settings.stage_launcher is not None:
            self._stage(td, "serve-bench")
            return
        self.serve_and_bench(td, trial.spec.serve.targets)

    def serve_and_bench(self, td: TrialDir, targets: Sequence[str]) -> None:
        """The trial's servers on this machine, the bench stage against them, the servers stopped."""
        if td.done("bench"):
            return
        self.progress(td.root.name, "waiting for the benchmark slot")
        with self._bench_lock:
            started = [(t, *self._start_server(td, t)) for t in targets]
            try:
                endpoints = {t: self._await_server(td, t, proc, ep) for t, proc, ep in started}
                write_json(td.stage_dir("serve") / "endpoints.json", endpoints)
                if not any(e["status"] == "ready" for e in endpoints.values()):
                    reasons = "; ".join(f"{t}: {e['reason']}" for t, e in endpoints.items())
                    raise StageError(f"no serving target came up ({reasons})", reason="ServeFailed")
                self._await_scrapes(td, endpoints, after=0)  # the load shows from its start
                self._stage(td, "bench")
                self._await_scrapes(td, endpoints, after=time.time())  # and its last requests too
            finally:
                for _, proc, _ in started:
                    Processes.stop(proc)
                if self.prometheus:
                    from fpgaflow.prometheus import SERVERS_JOB, address_of

                    for _, _, endpoint in started:
                        self.prometheus.remove_target(SERVERS_JOB, address_of(endpoint["metrics"]))

    def run_trial(self, trial: Trial) -> dict:
        td = TrialDir(self.folder / trial.name)
        store = self.store
        try:
            for stage in BUILD_STAGES:
                if stage not in td.stages():
                    self.progress(trial.name, "trained by train.command without a Keras model: nothing to convert or serve")
                    break
                store.update_trial(self.experiment.name, trial.name, trial.parameters, phase="Running", stage=stage)
                self._stage(td, stage)
            else:
                store.update_trial(self.experiment.name, trial.name, trial.parameters, phase="Running", stage="serve")
                self._serve_and_bench(td, trial)
        except StageError as exc:
            reason = exc.reason
            summary = trial_summary(td)
            store.update_trial(self.experiment.name, trial.name, trial.parameters, phase="Failed",
                               stage=summary.get("stage") or "serve", reason=reason, message=str(exc))
            self.progress(trial.name, f"failed: {exc}")
            return summary | {"phase": "Failed", "reason": reason, "message": str(exc)}
        summary = trial_summary(td)
        store.update_trial(
            self.experiment.name, trial.name, trial.parameters, phase="Succeeded", stage=None, reason=None, message=None,
            accuracy_float=summary["accuracy"]["float"], accuracy_emulated=summary["accuracy"]["emulated"],
            argmax_agreement=summary["argmax_agreement"],
            results={"benchmark": summary["benchmark"], "fidelity": summary["fidelity"], "provenance": summary["provenance"]},
        )
        self.progress(trial.name, "done")
        return summary

    # ---------------------------------------------------------------- the whole experiment
    def run(self) -> list[dict]:
        self.prepare()
        self._start_live_metrics()
        try:
            summaries = self._run_trials()
            self._finish_live_metrics()
        finally:
            if self.prometheus:
                self.prometheus.stop()
                self.prometheus = None
        phase = "Succeeded" if all(s["phase"] == "Succeeded" for s in summaries) else "Failed"
        self.store.set_experiment_phase(self.experiment.name, phase, None if phase == "Succeeded" else "TrialFailed")
        self.write_report(summaries)
        return summaries

    def _run_trials(self) -> list[dict]:
        """Every trial, parallel_trials at a time; on Ctrl-C every process is stopped and the experiment marked interrupted."""
        parallel = self.experiment.spec.sweep.parallel_trials if self.experiment.spec.sweep else 1
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial")
        futures = [pool.submit(self.run_trial, t) for t in self.trials]
        try:
            while True:
                done, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                if not pending or any(f.exception() for f in done):
                    break
        except KeyboardInterrupt:
            self.procs.stop_all()  # before waiting on the pool: its threads wait on these processes
            pool.shutdown(wait=True, cancel_futures=True)
            self.store.set_experiment_phase(self.experiment.name, "Failed", "Interrupted")
            raise
        finally:
            self.procs.stop_all()
        pool.shutdown(wait=True)
        return [f.result() for f in futures]

    # ---------------------------------------------------------------- live metrics (fpgaflow.prometheus)
    def _start_live_metrics(self) -> None:
        """The run's own Prometheus, data in <experiment>/prometheus/, when installed and not turned off;
        without it the run goes on as before, and says so once."""
        from fpgaflow.prometheus import LocalPrometheus, PrometheusError, prometheus_binary

        binary, why_not = prometheus_binary(self.settings.prometheus)
        if binary is None:
            if why_not:
                self.progress("", why_not)
            return
        try:
            self.prometheus = LocalPrometheus(self.folder / "prometheus", binary=binary, host=self.settings.host)
        except PrometheusError as exc:
            self.progress("", f"live metrics are off: {exc}")
            return
        self.progress("", f"live metrics: Prometheus at {self.prometheus.url}; the dashboards' PromQL works there")

    def _scrape_training(self, prometheus: LocalPrometheus, td: TrialDir, cmd: list[str]) -> tuple[str, str]:
        """Give the trainer a metrics port (appended to ``cmd``) and register it with Prometheus, and wait
        until Prometheus has taken it up (it applies new targets within 5-10 s; a short training would end unseen)."""
        from fpgaflow.prometheus import TRAINING_JOB

        port = free_port(self.settings.host)
        address = f"{self.settings.host}:{port}"
        cmd += ["--metrics-host", self.settings.host, "--metrics-port", str(port), "--metrics-linger", "3"]
        prometheus.add_target(TRAINING_JOB, address, {"experiment": self.experiment.name, "trial": td.root.name})
        self.progress(td.root.name, "train: waiting for Prometheus to take up the trainer's metrics port")
        if not prometheus.await_target(address, timeout=15):
            self.progress("", f"live metrics: Prometheus did not take up the trainer at {address} within 15 s "
                              f"(see {prometheus.log})")
        return TRAINING_JOB, address

    def _await_scrapes(self, td: TrialDir, endpoints: dict, after: float) -> None:
        """With Prometheus on: wait (15 s at most) until it has scraped every ready server at ``after`` or later."""
        if not self.prometheus:
            return
        from fpgaflow.prometheus import address_of

        self.progress(td.root.name, "serve: waiting for Prometheus to scrape the servers")
        for endpoint in endpoints.values():
            if endpoint["status"] == "ready" and not self.prometheus.await_scrape(address_of(endpoint["metrics"]), after,
                                                                                  timeout=15):
                self.progress("", f"live metrics: Prometheus has not scraped {endpoint['metrics']} within 15 s "
                                  f"(see {self.prometheus.log})")

    def _finish_live_metrics(self) -> None:
        """Every dashboard panel over the run (prometheus/panels.json, .csv) and the Prometheus view of the run
        (prometheus/prometheus.png), in self.live_metrics; a failure here costs the run nothing but them."""
        if not self.prometheus:
            return
        from fpgaflow.prometheus import PrometheusError, summarize_run

        try:
            self.live_metrics = summarize_run(self.prometheus, self.experiment.name, self.prometheus.started, time.time())
        except (PrometheusError, OSError, ValueError) as exc:
            self.progress("", f"live metrics: the Prometheus view of the run failed: {exc}")
            return
        self.progress("", f"live metrics: every dashboard panel over the run in {self.live_metrics['panels']}, "
                          f"plotted in {self.live_metrics['plot']}")

    def write_report(self, summaries: list[dict]) -> Path:
        """report.md, report.html and the plots (fpgaflow.report.write_report, as `fpgaflow report` does), and
        timeline.json: what ran when, which only the runner knows."""
        path = write_report(self.folder, self.experiment.name, summaries, experiment_facts(self.folder))
        write_json(self.folder / "timeline.json", sorted(self.timeline, key=lambda e: e["start"]))
        return path


def describe_stage(td: TrialDir, stage: str) -> str:
    """What a running stage of the trial is doing, read from its files (the training's epochs, the load
    generator's last line)."""
    if stage == "train":
        path = td.stage_dir("train") / "history.json"
        try:
            history = json.loads(path.read_text())
            last = history["epochs"][-1]
            return f"train: epoch {last['epoch']}/{history['total_epochs']}, val. accuracy {last.get('val_accuracy', 0):.3f}"
        except (OSError, ValueError, KeyError, IndexError):
            said = last_line(td.stage_dir("train") / "log.txt")
            return f"train: {said[len('data: '):]}" if said.startswith("data: ") else "train: loading data and building the model"
    if stage == "bench":
        return f"bench: {last_line(td.stage_dir('bench') / 'log.txt') or 'load generator starting'}"
    return {"convert": "convert: hls4ml conversion, compile and fidelity check"}.get(stage, stage)


def last_line(path: Path, tail: int = 4096) -> str:
    """The last complete line of a log (the bench stage prints a line a run and progress within one); "" when
    there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""
