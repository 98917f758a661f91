"""The sweep's Pareto front of accuracy against DSPs and latency, in the report's table and plot."""

from fpgaflow.plots import plot_pareto
from fpgaflow.report import markdown, pareto_front, sweep_points


def test_the_front_holds_what_no_other_point_beats():
    # (cost, accuracy): b is cheaper and better than a; c is dearer but the most accurate; d ties c's cost, less accurate
    points = [(100, 0.70), (80, 0.72), (300, 0.76), (300, 0.74), (80, 0.72)]
    assert pareto_front(points) == [False, True, True, False, True], "equal points do not beat each other"
    assert pareto_front([]) == [] and pareto_front([(1, 0.5)]) == [True]


def _summary(name, rf, accuracy, dsp, latency):
    return {"name": name, "parameters": {"hls.reuseFactor": rf}, "phase": "Succeeded", "stage": None,
            "accuracy": {"float": 0.77, "fixed": None, "emulated": accuracy}, "argmax_agreement": 0.99,
            "estimate": {"dsp": dsp, "lut": 1, "ff": 1, "bram18": 0, "latency_cycles": latency // 5,
                         "latency_ns": float(latency), "ii_ns": 5.0}}


def test_a_sweep_report_marks_the_front_and_draws_it(tmp_path):
    summaries = [_summary("t00", 1, 0.770, 4000, 145), _summary("t01", 4, 0.770, 1000, 160),
                 _summary("t02", 16, 0.765, 250, 220), _summary("t03", 8, 0.760, 600, 200)]
    points = sweep_points(summaries)
    assert [(p["name"], p["front_dsp"], p["front_latency_ns"]) for p in points] == [
        ("t00", False, True), ("t01", True, False), ("t02", True, False), ("t03", False, False)]
    report = markdown("sweep", summaries, {})
    assert "## Sweep: accuracy against DSPs and latency" in report and "![Pareto front](pareto.png)" in report
    assert "| t01 | hls.reuseFactor=4 | 0.7700 | 1000 | 160.0 | yes |  |" in report
    plot_pareto(points, tmp_path / "pareto.png", "sweep")
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert "## Sweep" not in markdown("one", summaries[:1], {}), "a single trial has no front to show"
