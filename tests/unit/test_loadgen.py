import numpy as np

from fpgaflow.inference.loadgen import RunResult


def test_summary_percentiles_follow_the_record():
    lat = np.arange(1, 1001, dtype=float)  # 1..1000 ms
    row = RunResult("cpu", 4, 1, lat, {"UNAVAILABLE": 2}, wall_seconds=2.0).summary()
    assert row["requests"] == 1002 and row["ok"] == 1000
    assert row["p50_ms"] == np.percentile(lat, 50) and row["p99_ms"] == np.percentile(lat, 99)
    assert row["mean_ms"] == 500.5 and row["throughput_rps"] == 500.0
    assert row["errors"] == {"UNAVAILABLE": 2}
