"""The experiment report: one document rendered to report.md and report.html, the service (SONIC-style)
table, the plots with their CSVs, and `fpgaflow report NAME` rewriting all of it from the run store."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.cli import main
from fpgaflow.report import (
    histogram_selection,
    html_report,
    markdown,
    service_point,
    service_rows,
    target_note,
)
from fpgaflow.runner import LocalRunner, RunSettings
from fpgaflow.spec import Experiment, ExperimentSpec
from fpgaflow.store import RunStore
from fpgaflow.summary import experiment_facts, stored_summaries, trial_summary
from fpgaflow.trial import TrialDir, write_json

NAME = "svc"
SIMULATED = {"name": "jets", "simulated": True, "source": "simulated with Pythia 8.317.2 and FastJet 3.5.2, no detector simulation",
             "simulation": {"classes": {"g": 2000, "q": 2000, "w": 2000, "z": 2000, "t": 2000}, "seed": 1, "ptWindowGeV": [800, 1200]}}
DATA_LINE = ("simulated with Pythia 8.317.2 and FastJet 3.5.2, no detector simulation (10,000 jets of g, q, w, z, t, "
             "pT 800-1200 GeV, seed 1)")


def run_row(target, batch, clients, p50, rps, ok=100, errors=None):
    return {"target": target, "concurrency": clients, "batch_size": batch, "requests": ok + sum((errors or {}).values()),
            "ok": ok, "errors": errors or {}, "p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5, "mean_ms": p50 * 1.1,
            "std_ms": 0.1, "throughput_rps": rps, "throughput_samples_per_s": rps * batch, "wall_seconds": ok / rps}


# cpu: the best batch is 8 (24,000 samples/s at 4 clients), not the largest, 64 (22,400)
CPU_RUNS = [run_row("cpu", 1, 1, 0.5, 2000.0), run_row("cpu", 1, 4, 0.9, 4500.0),
            run_row("cpu", 8, 1, 0.7, 1400.0), run_row("cpu", 8, 4, 1.2, 3000.0),
            run_row("cpu", 64, 1, 3.0, 300.0), run_row("cpu", 64, 4, 9.0, 350.0, errors={"UNAVAILABLE": 2})]
# fpga: never one client alone; batch 16 wins
FPGA_RUNS = [run_row("fpga", 1, 2, 1.25, 1500.0), run_row("fpga", 1, 8, 2.0, 3900.0),
             run_row("fpga", 16, 2, 2.5, 700.0), run_row("fpga", 16, 8, 4.0, 1900.0)]
GPU_REASON = "no GPU <none> & no CUDA"


def estimate(dsp, latency_ns):
    return {"dsp": dsp, "lut": 100, "ff": 200, "bram18": 0, "latency_cycles": int(latency_ns // 5),
            "latency_ns": float(latency_ns), "ii_ns": 5.0}


def bench_files(td: TrialDir, targets: dict, runs: list[dict], latencies: dict[str, np.ndarray]) -> None:
    out = td.stage_dir("bench")
    write_json(out / "results.json", {"benchmark": {"batchSizes": [1, 8, 64]}, "targets": targets, "runs": runs})
    np.savez_compressed(out / "latencies.npz", **latencies)
    write_json(out / "result.json", {"targets": targets, "runs": runs})


def done_until_bench(td: TrialDir, accuracy: float, dsp: int, latency_ns: float) -> None:
    write_json(td.stage_dir("train") / "result.json", {"accuracy": accuracy, "dataset": SIMULATED})
    write_json(td.stage_dir("convert") / "result.json", {
        "fidelity": {"accuracy_emulated": accuracy - 0.01, "argmax_agreement": 0.99},
        "timing": {"latency_ns": latency_ns, "ii_ns": 5.0}, "estimate": estimate(dsp, latency_ns)})


def latencies_of(runs: list[dict], key: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len(runs))
    return {key.format(**r): rng.lognormal(np.log(r["p50_ms"]), 0.3, r["ok"]) for r in runs}


@pytest.fixture
def store(tmp_path) -> RunStore:
    """A run store with four trials, none of which ran: t00 scanned batch sizes on cpu, fpga (gpu
    unavailable); t01 is an old run (one batch size, latencies keyed without it); t02 failed in convert;
    t03 failed outside its folder (no server came up), which only the index knows."""
    store = RunStore(tmp_path / "home")
    folder = store.experiment_dir(NAME)
    git = {"commit": "0123abcd", "dirty": False}
    write_json(folder / "experiment.json", {"name": NAME, "spec_hash": "h", "manifest": {}, "manifest_path": "/m/svc.yaml", "git": git})
    store.upsert_experiment(NAME, "h", {}, git, "Failed")
    tds = {}
    for i, rf in enumerate((1, 4, 2, 8)):
        name = f"t0{i}"
        tds[name] = TrialDir.create(folder / name, NAME, name, {"hls.reuseFactor": rf}, ExperimentSpec())
        store.update_trial(NAME, name, {"hls.reuseFactor": rf}, phase="Succeeded")
    targets = {"cpu": {"status": "ready", "address": "127.0.0.1:1", "backend": "TensorFlow", "accuracy_served": 0.75},
               "gpu": {"status": "unavailable", "reason": GPU_REASON},
               "fpga": {"status": "ready", "address": "127.0.0.1:2", "backend": "vectorized emulation (...)",
                        "accuracy_served": 0.74}}
    done_until_bench(tds["t00"], 0.75, 4000, 45.0)
    bench_files(tds["t00"], targets, CPU_RUNS + FPGA_RUNS, latencies_of(CPU_RUNS + FPGA_RUNS, "{target}_b{batch_size}_c{concurrency}"))
    old = [run_row("cpu", 1, 1, 0.4, 2500.0), run_row("cpu", 1, 3, 0.6, 5000.0)]
    done_until_bench(tds["t01"], 0.74, 1000, 60.0)
    bench_files(tds["t01"], {"cpu": targets["cpu"]}, old, latencies_of(old, "{target}_c{concurrency}"))
    write_json(tds["t02"].stage_dir("train") / "result.json", {"accuracy": 0.7})
    write_json(tds["t02"].stage_dir("convert") / "error.json", {"stage": "convert", "reason": "FidelityCheckFailed",
                                                                 "message": "argmax agreement 0.5 < 0.9"})
    store.update_trial(NAME, "t02", {"hls.reuseFactor": 2}, phase="Failed", stage="convert", reason="FidelityCheckFailed",
                       message="argmax agreement 0.5 < 0.9")
    done_until_bench(tds["t03"], 0.72, 500, 80.0)
    store.update_trial(NAME, "t03", {"hls.reuseFactor": 8}, phase="Failed", stage="bench", reason="ServeFailed",
                       message="no serving target came up (cpu: <boom>)")
    return store


def runner_summaries(store: RunStore) -> list[dict]:
    """What LocalRunner.run hands write_report: each trial's summary, t03's marked failed by the runner."""
    folder = store.experiment_dir(NAME)
    summaries = [trial_summary(TrialDir(folder / f"t0{i}")) for i in range(4)]
    summaries[3] |= {"phase": "Failed", "reason": "ServeFailed", "message": "no serving target came up (cpu: <boom>)"}
    return summaries


def test_the_service_point_is_batch_1_and_the_best_batch_not_the_largest():
    point = service_point(CPU_RUNS)
    assert point["batch_1"] == {"batch_size": 1, "p50_ms": 0.5, "p50_clients": 1, "best_rps": 4500.0,
                                "best_samples_per_s": 4500.0, "best_clients": 4}
    best = point["best_batch"]
    assert (best["batch_size"], best["p50_ms"], best["best_samples_per_s"], best["best_clients"]) == (8, 0.7, 24000.0, 4)
    assert point["errors"] == 2
    fpga = service_point(FPGA_RUNS)
    assert (fpga["batch_1"]["p50_ms"], fpga["batch_1"]["p50_clients"]) == (1.25, 2), "the fewest clients run stand in for one"
    assert fpga["best_batch"]["batch_size"] == 16
    # only batch 8 ran: no batch-1 numbers, and 8 is the best batch
    only8 = service_point([r for r in CPU_RUNS if r["batch_size"] == 8])
    assert only8["batch_1"] is None and only8["best_batch"]["batch_size"] == 8
    # a run without a successful request counts for nothing
    failed = run_row("cpu", 64, 8, 1.0, 99999.0, ok=0, errors={"DEADLINE_EXCEEDED": 5})
    assert service_point([*CPU_RUNS, failed])["best_batch"]["batch_size"] == 8


def test_a_targets_note_names_the_runtime_its_server_chose():
    assert target_note("cpu", {"backend": "LiteRT 2.3.0 (XNNPACK) on the CPU, converted at load"}, None) == "LiteRT, CPU"
    assert target_note("cpu", {"backend": "TensorFlow 2.21.0 on /CPU:0 (not LiteRT: ...)"}, None) == "TensorFlow, CPU"
    assert target_note("gpu", {"backend": "TensorFlow 2.21.0 on /GPU:0"}, None) == "TensorFlow, GPU"
    assert target_note("fpga", {"backend": "hls4ml C simulation (the vectorized ...)"}, None) == "hls4ml C sim (fallback) †"
    assert target_note("fpga", {"backend": "vectorized emulation (...)"}, {"latency_ns": 45, "ii_ns": 5}) == (
        "bit-exact emulator † (device, modelled: 45 ns, II 5 ns)")


def test_the_service_table_rows(store):
    rows = service_rows(runner_summaries(store))
    by_target = {(r[0], r[1]): r for r in rows}
    assert by_target["t00", "cpu"] == ["t00", "cpu", "TensorFlow, CPU", "0.500", "4500.0", "4", "8", "0.700", "24000.0", "4", "2"]
    fpga = by_target["t00", "fpga"]
    assert fpga[2] == "bit-exact emulator † (device, modelled: 45 ns, II 5 ns)"
    assert fpga[3:] == ["1.250 (2 clients)", "3900.0", "8", "16", "2.500 (2 clients)", "30400.0", "8", "0"]
    assert by_target["t00", "gpu"][2] == f"unavailable: {GPU_REASON}" and set(by_target["t00", "gpu"][3:]) == {"—"}
    assert by_target["t01", "cpu"][3:7] == ["0.400", "5000.0", "3", "1"]
    assert [r[:2] for r in rows] == [["t00", "cpu"], ["t00", "gpu"], ["t00", "fpga"], ["t01", "cpu"]]


class _Tables(HTMLParser):
    """Every <table> of an HTML page as lists of cell texts, and each <img>'s src."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _md_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("| "):
            if current is None:
                current = []
                tables.append(current)
            current.append([cell.replace("\\|", "|").replace("\\<", "<") for cell in re.split(r"(?<!\\) \| ", line[2:-2])])
        elif not line.startswith("|---"):
            current = None
    return [[row for row in table] for table in tables]


def test_markdown_and_html_hold_the_same_tables_and_html_escapes(store):
    summaries = runner_summaries(store)
    facts = experiment_facts(store.experiment_dir(NAME))
    md, page = markdown(NAME, summaries, facts), html_report(NAME, summaries, facts)
    parsed = _Tables()
    parsed.feed(page)
    assert _md_tables(md) == parsed.tables and len(parsed.tables) == 5, "accuracy, estimate, sweep, service, every run"
    service = next(t for t in parsed.tables if t[0][3] == "p50 [ms], batch 1, 1 client")
    assert service[1:] == service_rows(summaries)
    # the latency section opens with the service table, before the table of every run
    latency = md.index("## Latency and throughput")
    assert latency < md.index("| trial | target | note | p50 [ms], batch 1, 1 client") < md.index("| trial | target | note | batch | clients")
    assert "## FPGA resources and latency" in md and "| 4000 |" in md and "| t00 | cpu |" in md
    assert "no GPU &lt;none&gt; &amp; no CUDA" in page and "<none>" not in page
    assert "no GPU \\<none> & no CUDA" in md, "escaped in markdown too: renderers drop what looks like an HTML tag"
    assert "&lt;boom&gt;" in page and "(cpu: \\<boom>)" in md, "the runner's failure, escaped"
    assert "**t02 failed** in `convert` (FidelityCheckFailed)" in md and "<strong>t02 failed</strong> in <code>convert</code>" in page
    assert "(device, modelled: 45 ns, II 5 ns)" in md and "vectorized bit-exact emulator" in md
    assert "<script" not in page and "<style>" in page, "self-contained: inline CSS, nothing to fetch"
    assert "![t00 latency histogram](t00/bench/latency_hist.png) ([data](t00/bench/latency_hist.csv))" in md
    assert "![Pareto front](pareto.png) ([data](pareto.csv))" in md
    assert set(parsed.images) == set(re.findall(r"!\[[^]]*\]\(([^)]+)\)", md))
    assert "t02/bench" not in md and "t00/convert/profiling.png" in md, "no benchmark plots for a trial without runs"
    assert f"- data: **jets**, {DATA_LINE}" in md and f"data: <strong>jets</strong>, {DATA_LINE}" in page, "what the data is"


PLOTS = ["pareto.png", "pareto.csv", *(f"{t}/bench/{p}.{ext}" for t in ("t00", "t01")
                                       for p in ("latency", "throughput", "latency_hist") for ext in ("png", "csv"))]


def test_the_report_command_rewrites_what_the_runner_wrote(store, capsys):
    folder = store.experiment_dir(NAME)
    runner = LocalRunner(Experiment(metadata={"name": NAME}), Path("svc.yaml"), RunSettings(home=store.home))
    path = runner.write_report(runner_summaries(store))
    assert path == folder / "report.md"
    written = {name: (folder / name).read_text() for name in ("report.md", "report.html")}
    for name in PLOTS:
        assert (folder / name).stat().st_size > 0, name
    for name in ("report.md", "report.html", *PLOTS):
        (folder / name).unlink()

    assert main(["report", NAME, "--home", str(store.home)]) == 0
    out = capsys.readouterr().out
    assert f"report: {folder / 'report.md'} and report.html" in out.replace("\n", "")
    assert "each target as a service" in out and "24000.0" in out and "<none>" in out, "the terminal tables"
    assert f"data: jets, {DATA_LINE}" in " ".join(out.split()), "what the data is, under the tables"
    assert {name: (folder / name).read_text() for name in ("report.md", "report.html")} == written
    for name in PLOTS:
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "t00/bench/latency.png").read_bytes()[:4] == b"\x89PNG"
    with (folder / "t00/bench/throughput.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(CPU_RUNS) + len(FPGA_RUNS) and "cpu, batch 8" in {r["series"] for r in rows}
    assert {r["trial"] for r in csv.DictReader((folder / "pareto.csv").open())} == {"t00", "t01", "t03"}


def test_a_missing_experiment_exits_2_and_names_it(tmp_path, capsys):
    assert main(["report", "no-such-run", "--home", str(tmp_path / "home")]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_the_histogram_counts_every_latency(store):
    folder = store.experiment_dir(NAME)
    summaries = stored_summaries(folder, store.experiment(NAME)["trials"])
    assert [s["phase"] for s in summaries] == ["Succeeded", "Succeeded", "Failed", "Failed"]
    assert main(["report", NAME, "--home", str(store.home)]) == 0
    latencies = np.load(folder / "t00/bench/latencies.npz")
    with (folder / "t00/bench/latency_hist.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["series"]] = counts.get(row["series"], 0) + int(row["count"])
        assert float(row["bin_low_ms"]) < float(row["bin_high_ms"])
    assert counts == {"cpu, batch 1, 4 clients": len(latencies["cpu_b1_c4"]), "fpga, batch 1, 8 clients": len(latencies["fpga_b1_c8"])}
    edges = sorted({float(r["bin_low_ms"]) for r in rows})
    assert edges[-1] / edges[-2] == pytest.approx(edges[1] / edges[0], rel=1e-3), "log-spaced bins"
    old = np.load(folder / "t01/bench/latencies.npz")
    assert histogram_selection(json.loads((folder / "t01/bench/results.json").read_text())["runs"], set(old.files)) == {
        "cpu, batch 1, 3 clients": "cpu_c3"}, "runs from before batch scans keep the batch size out of the key"
