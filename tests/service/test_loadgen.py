"""The load generator against real servers of the tiny run: it counts exactly the requests it sent (and
the errors, by code), its percentiles are those of its per-request record, both protocols, the open loop
keeps its schedule, and `fpgaflow bench --address` works on its own against an endpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaflow_inference import loadgen
from fpgaflow_inference.loadgen import PROTOCOLS, Load, payloads, run_load
from tests.conftest import fpgaflow

pytestmark = pytest.mark.slow
MODEL, INPUT = "tiny-jets", "features"


@pytest.fixture(scope="module")
def x(tiny_run):
    return np.load(tiny_run["trial"] / "train" / "testset.npz")["x"][:500].astype(np.float32)


def assert_percentiles_follow_the_record(row: dict, latencies: np.ndarray) -> None:
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    assert (row["p50_ms"], row["p90_ms"], row["p99_ms"]) == (round(p50, 4), round(p90, 4), round(p99, 4))
    assert row["mean_ms"] == round(latencies.mean(), 4) and row["std_ms"] == round(latencies.std(), 4)


@pytest.mark.parametrize("proto, target", [("tfserving", "fpga"), ("v2", "cpu")])
def test_closed_loop_counts_every_request_it_sent(servers, x, proto, target, monkeypatch):
    monkeypatch.setattr(loadgen, "PROGRESS_EVERY", 0.1)
    seen = []
    result = run_load(target, servers[target]["address"], payloads(PROTOCOLS[proto], MODEL, INPUT, x, 2), 2,
                      Load(3, 150, warmup=5, protocol=proto), progress=lambda done, total: seen.append((done, total)))
    row = result.summary()
    assert (row["requests"], row["ok"], row["errors"]) == (450, 450, {})
    assert len(result.latencies_ms) == 450 and (result.latencies_ms > 0).all()
    assert_percentiles_follow_the_record(row, result.latencies_ms)
    assert row["throughput_samples_per_s"] == pytest.approx(2 * row["throughput_rps"], rel=1e-3)
    assert (row["protocol"], row["mode"]) == (proto, "closed")
    assert seen and all(total == 450 and 0 <= done <= 450 for done, total in seen)  # progress, warm-up excluded
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_errors_are_counted_by_code(servers, x):
    wrong = payloads(PROTOCOLS["tfserving"], "no-such-model", INPUT, x, 1)
    row = run_load("cpu", servers["cpu"]["address"], wrong, 1, Load(2, 20)).summary()
    assert (row["requests"], row["ok"], row["errors"]) == (40, 0, {"NOT_FOUND": 40})
    assert "p50_ms" not in row  # no latency percentiles without answers


def test_open_loop_sends_on_schedule_and_counts_from_it(servers, x):
    rate, per_client = 200.0, 40
    result = run_load("fpga", servers["fpga"]["address"], payloads(PROTOCOLS["tfserving"], MODEL, INPUT, x, 1), 1,
                      Load(2, per_client, rate=rate))
    row = result.summary()
    assert (row["requests"], row["ok"], row["mode"], row["offered_rps"]) == (80, 80, "open", rate)
    # each client sends at rate / 2: its last request cannot leave before (n - 1) intervals
    assert row["wall_seconds"] >= (per_client - 1) / (rate / 2)
    assert_percentiles_follow_the_record(row, result.latencies_ms)


def test_bench_on_its_own_against_an_endpoint(servers, tmp_path):
    out = tmp_path / "bench"
    done = fpgaflow("bench", "--address", servers["cpu"]["address"], "--model", MODEL, "--protocol", "v2",
                    "--concurrency", "1", "2", "--batch-size", "1", "4", "--requests", "30", "--warmup", "2", "--out", str(out))
    assert "input 'features' (samples of shape [16])" in done.stdout  # found in the endpoint's v2 metadata
    results = json.loads((out / "results.json").read_text())
    runs = {(r["batch_size"], r["concurrency"]): r for r in results["runs"]}
    assert set(runs) == {(1, 1), (1, 2), (4, 1), (4, 2)}
    latencies = np.load(out / "latencies.npz")
    for (batch, clients), row in runs.items():
        assert row["requests"] == row["ok"] == 30 * clients and row["protocol"] == "v2"
        record = latencies[f"endpoint_b{batch}_c{clients}"]
        assert len(record) == 30 * clients
        assert_percentiles_follow_the_record(row, record)
    for name in ("results.csv", "latency.png", "throughput.png"):
        assert (out / name).stat().st_size > 0
    refused = fpgaflow("bench", "--address", servers["cpu"]["address"], check=False)
    assert refused.returncode == 2 and "--model" in refused.stderr
