import numpy as np

from fpgaflow_inference.loadgen import RunResult


def test_summary_percentiles_follow_the_record():
    lat = np.arange(1, 1001, dtype=float)  # 1..1000 ms
    row = RunResult("cpu", 4, 1, lat, {"UNAVAILABLE": 2}, wall_seconds=2.0).summary()
    assert row["requests"] == 1002 and row["ok"] == 1000
    assert row["p50_ms"] == np.percentile(lat, 50) and row["p99_ms"] == np.percentile(lat, 99)
    assert row["mean_ms"] == 500.5 and row["throughput_rps"] == 500.0
    assert row["errors"] == {"UNAVAILABLE": 2}


def test_the_run_progress_line_is_the_bench_logs_last_line(tmp_path):
    """`fpgaflow run` shows, for a trial in its bench stage, the load generator's latest line."""
    from fpgaflow.runner import describe_stage
    from fpgaflow.spec import ExperimentSpec
    from fpgaflow.trial import TrialDir

    td = TrialDir.create(tmp_path / "t00", "x", "t00", {}, ExperimentSpec.model_validate({}))
    assert describe_stage(td, "bench") == "bench: load generator starting"
    log = td.stage_dir("bench") / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("cpu b1 x1   p50 1.0 ms\ncpu b1 x16: 3,200/8,000 requests (40%)\n")
    assert describe_stage(td, "bench") == "bench: cpu b1 x16: 3,200/8,000 requests (40%)"


def test_open_loop_load_and_protocols_are_named():
    import pytest

    from fpgaflow_inference.loadgen import Load, protocol

    assert (Load(4, 10).mode, Load(4, 10, rate=100.0).mode, Load(4, 10).total) == ("closed", "open", 40)
    assert protocol("v2").method == "/inference.GRPCInferenceService/ModelInfer"
    with pytest.raises(ValueError, match="unknown protocol 'rest'"):
        protocol("rest")
