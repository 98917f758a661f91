"""The local runner's edges: Ctrl-C leaves no process behind, a failed stage fails its trial with the
stage's reason, and a sweep runs its trials with the parallelism the spec allows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, fpgaflow

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_ctrl_c_stops_every_process(tiny_run, tmp_path):
    # Reuse the trained and converted trial: copy it without its serving and benchmark results, so the
    # run goes straight to starting servers.
    home = tmp_path / "home"
    shutil.copytree(tiny_run["home"], home)
    trial = home / "experiments" / "tiny-jets" / "t00"
    for stage in ("serve", "bench"):
        shutil.rmtree(trial / stage)
    # SIGINT as a terminal's Ctrl-C delivers it, even where this test runs in a background job (which ignores it)
    proc = subprocess.Popen([sys.executable, "-m", "fpgaflow", "run", str(tiny_run["manifest"]), "--home", str(home)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not (trial / "bench" / "log.txt").exists():  # servers are up once the benchmark starts
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the benchmark never started"
            time.sleep(0.2)
        pids = [json.loads((trial / "serve" / t / "server.json").read_text())["pid"] for t in ("cpu", "fpga")]
        assert all(alive(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids), "a server outlived the runner"
    leftovers = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"


def small_manifest(name: str, **spec) -> dict:
    base = {
        "dataset": {"name": "jets", "samples": 5000, "seed": 5},
        "model": {"layers": [16]},
        "train": {"epochs": 5, "batchSize": 128, "learningRate": 0.01},
        "serve": {"targets": ["fpga"]},
        "benchmark": {"concurrency": [2], "requestsPerClient": 20, "warmup": 2},
    }
    base.update(spec)
    return {"apiVersion": "fpgaflow.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name}, "spec": base}


def test_a_failed_stage_fails_its_trial_with_the_stages_reason(tmp_path):
    manifest = tmp_path / "m.yaml"
    # nothing agrees with a float model 100 % at 4 bits: the fidelity gate must stop the trial
    manifest.write_text(yaml.safe_dump(small_manifest("fails", hls={"precision": "ap_fixed<4,2>", "minAgreement": 1.0})))
    done = fpgaflow("run", str(manifest), "--home", str(tmp_path / "home"), check=False)
    assert done.returncode == 1
    assert "t00 failed in convert (FidelityCheckFailed)" in " ".join(done.stdout.split())
    trial = tmp_path / "home" / "experiments" / "fails" / "t00"
    assert json.loads((trial / "convert" / "error.json").read_text())["reason"] == "FidelityCheckFailed"
    assert not (trial / "serve").exists(), "nothing is served after a failed conversion"
    shown = json.loads(fpgaflow("show", "fails", "--json", "--home", str(tmp_path / "home")).stdout)
    assert shown["phase"] == "Failed"
    [t] = shown["trials"]
    assert (t["phase"], t["stage"], t["reason"]) == ("Failed", "convert", "FidelityCheckFailed")


def test_sweep_runs_every_trial_in_parallel_and_benchmarks_one_at_a_time(tmp_path):
    sweep = {"parallelTrials": 2, "parameters": {"hls.reuseFactor": [1, 2], "hls.precision": ["ap_fixed<16,6>", "ap_fixed<12,5>"]}}
    manifest = tmp_path / "sweep.yaml"
    manifest.write_text(yaml.safe_dump(small_manifest("sweep", sweep=sweep)))
    home = tmp_path / "home"
    done = fpgaflow("run", str(manifest), "--home", str(home))
    folder = home / "experiments" / "sweep"
    for name in ("t00", "t01", "t02", "t03"):
        spec = json.loads((folder / name / "spec.json").read_text())
        config = json.loads((folder / name / "convert" / "hls_config.json").read_text())
        assert config["Model"]["ReuseFactor"] == spec["parameters"]["hls.reuseFactor"]
        assert config["Model"]["Precision"]["default"] == spec["parameters"]["hls.precision"]
    assert done.stdout.count("Succeeded") == 4
    report = (folder / "report.md").read_text()
    assert "## Sweep: accuracy against DSPs and latency" in report and (folder / "pareto.png").exists()
    assert report.count("hls.reuseFactor=") >= 4 + 4, "every trial in the accuracy table and in the sweep table"
    timeline = json.loads((folder / "timeline.json").read_text())
    spans = {(e["trial"], e["stage"]): (e["start"], e["end"]) for e in timeline}
    assert len(spans) == 12  # train, convert, bench for each trial

    def overlap(a, b):
        return a[0] < b[1] and b[0] < a[1]

    def most_at_once(intervals):
        edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        return peak

    trains = [spans[(t, "train")] for t in ("t00", "t01", "t02", "t03")]
    assert overlap(trains[0], trains[1]), "two trials must train at once"
    stages = [span for span in spans.values()]
    assert most_at_once(stages) <= 2, "no more than parallelTrials stages at once"
    benches = [spans[(t, "bench")] for t in ("t00", "t01", "t02", "t03")]
    assert not any(overlap(a, b) for i, a in enumerate(benches) for b in benches[i + 1:]), "benchmarks overlapped"


def test_serve_bench_serves_and_benchmarks_a_converted_trial_where_it_is(tiny_run, tmp_path):
    """`fpgaflow serve-bench --trial-dir D`: what a batch job runs for a trial whose train and convert stages ran
    as jobs of their own: the servers on its machine, the bench stage against them, every server stopped."""
    home = tmp_path / "home"
    shutil.copytree(tiny_run["home"], home)
    trial = home / "experiments" / "tiny-jets" / "t00"
    for stage in ("serve", "bench"):
        shutil.rmtree(trial / stage)
    fpgaflow("serve-bench", "--trial-dir", str(trial))
    results = json.loads((trial / "bench" / "result.json").read_text())
    assert results and json.loads((trial / "serve" / "endpoints.json").read_text())["fpga"]["status"] == "ready"
    leftovers = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
