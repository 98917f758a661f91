"""The report of a benchmark measured from several networks (SONIC's on-prem and remote): a row per target
and network in the service table and the table of every run, labelled with what the network models, the
note that the distance is modelled, the histogram's per-network latencies and the plots' lines."""

from __future__ import annotations

import numpy as np

from fpgaflow.plots import benchmark_series, network_label
from fpgaflow.report import histogram_selection, latency_rows, markdown, network_note, service_rows
from fpgaflow.spec import ExperimentSpec
from fpgaflow.summary import trial_summary
from fpgaflow.trial import TrialDir, write_json
from tests.unit.test_report_document import done_until_bench, run_row

ON_PREM = {"network": "on-prem", "rtt_ms": 0.0, "bandwidth_mbps": None}
REMOTE = {"network": "remote", "rtt_ms": 50.0, "bandwidth_mbps": None}
RUNS = [run_row("cpu", 1, 1, 0.5, 2000.0) | ON_PREM, run_row("fpga", 1, 1, 0.3, 3000.0) | ON_PREM,
        run_row("cpu", 1, 1, 50.6, 19.7) | REMOTE, run_row("fpga", 1, 1, 50.4, 19.8) | REMOTE]
TARGETS = {"cpu": {"status": "ready", "address": "127.0.0.1:1", "backend": "TensorFlow", "accuracy_served": 0.75},
           "fpga": {"status": "ready", "address": "127.0.0.1:2", "backend": "vectorized emulation", "accuracy_served": 0.74}}


def summary_of(tmp_path, runs: list[dict]) -> dict:
    td = TrialDir.create(tmp_path / "t00", "net", "t00", {}, ExperimentSpec())
    done_until_bench(td, 0.75, 4000, 45.0)
    out = td.stage_dir("bench")
    write_json(out / "results.json", {"benchmark": {"networks": [{"name": "on-prem", "rttMs": 0.0}, {"name": "remote", "rttMs": 50.0}]},
                                      "targets": TARGETS, "runs": runs})
    write_json(out / "result.json", {"targets": TARGETS, "runs": runs})
    return trial_summary(td)


def test_each_target_has_an_on_prem_and_a_remote_row_saying_the_distance_is_modelled(tmp_path):
    summaries = [summary_of(tmp_path, RUNS)]
    rows = service_rows(summaries)
    assert [r[1] for r in rows] == ["cpu, on-prem (direct)", "cpu, remote (50 ms RTT, modelled)",
                                    "fpga, on-prem (direct)", "fpga, remote (50 ms RTT, modelled)"]
    assert [r[3] for r in rows] == ["0.500", "50.600", "0.300", "50.400"]
    assert [r[1] for r in latency_rows(summaries)] == [r[1] for r in rows]
    note = network_note(summaries)
    assert note is not None and '"remote (50 ms RTT, modelled)"' in note and "no netem" in note and "relaying" in note
    md = markdown("net", summaries, {})
    assert note in md and md.index(note) < md.index("| trial | target | note | p50 [ms], batch 1, 1 client")
    assert network_label({"network": "wan", "rtt_ms": 20, "bandwidth_mbps": 100.0}) == "wan (20 ms RTT, 100 Mbit/s, modelled)"


def test_one_network_keeps_the_rows_as_they_were(tmp_path):
    summaries = [summary_of(tmp_path, [r for r in RUNS if r["network"] == "on-prem"])]
    assert [r[1] for r in service_rows(summaries)] == ["cpu", "fpga"]
    assert network_note(summaries) is None and "netem" not in markdown("net", summaries, {})
    # the networks' runs from one trial, but all of them direct: labelled, and no note of a modelled distance
    direct = [*summaries[0]["benchmark"]["runs"], run_row("cpu", 1, 1, 0.5, 2000.0) | ON_PREM | {"network": "lab"}]
    assert network_note([{**summaries[0], "benchmark": {**summaries[0]["benchmark"], "runs": direct}}]) is None


def test_the_histogram_and_the_plots_have_a_line_per_network():
    keys = {"cpu@on-prem_b1_c1", "cpu@remote_b1_c1", "fpga@on-prem_b1_c1", "fpga@remote_b1_c1"}
    assert histogram_selection(RUNS, keys) == {
        "cpu, on-prem, batch 1, 1 client": "cpu@on-prem_b1_c1", "fpga, on-prem, batch 1, 1 client": "fpga@on-prem_b1_c1",
        "cpu, remote, batch 1, 1 client": "cpu@remote_b1_c1", "fpga, remote, batch 1, 1 client": "fpga@remote_b1_c1"}
    assert [label for label, _ in benchmark_series(RUNS)] == ["cpu, on-prem", "cpu, remote", "fpga, on-prem", "fpga, remote"]
    assert np.array_equal([len(runs) for _, runs in benchmark_series(RUNS)], [1, 1, 1, 1])
