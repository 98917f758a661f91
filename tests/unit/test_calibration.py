"""The estimate's calibration (fpgaflow_converter.calibration, docs/estimates.md): the table of public synthesis
reports reads, the held-out split is fixed by the data, and the fitted model's errors on held-out reports are
pinned: a change that worsens any of them fails here. The goals are issue 19's."""

import csv

import pytest

from fpgaflow_converter.calibration import (
    FLOOR,
    GOAL,
    TABLE,
    calibrated,
    errors,
    heldout_table,
    is_heldout,
    predict,
    read_rows,
)
from fpgaflow_converter.calibration.designs import parse
from fpgaflow_converter.estimate import BACKENDS, QUANTITIES, estimate
from fpgaflow_converter.layershapes import Settings, shapes_from_nodes

# The mean relative error on held-out rows, as measured when the model was last changed. Lower one when a change
# improves the model; raise one only in a commit that says why the change is right although this figure worsens.
PINNED = {
    ("Vivado", "dsp"): 0.034, ("Vivado", "lut"): 0.323, ("Vivado", "ff"): 0.296, ("Vivado", "latency_cycles"): 0.196,
    ("Vitis", "dsp"): 0.212, ("Vitis", "lut"): 0.311, ("Vitis", "ff"): 0.268, ("Vitis", "latency_cycles"): 0.177,
}
COLUMNS = ["source", "backend", "tool_version", "hls4ml", "part", "clock_ns", "design", "layers", "precision",
           "input_precision", "weight_precision", "activation_precision", "pruned", "weights", "reuse_factor", "strategy",
           "io_type", "report", "dsp", "lut", "ff", "bram18", "latency_cycles", "ii_cycles", "use", "notes"]


def test_every_row_of_the_table_has_a_source_and_usable_rows_read():
    with TABLE.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        raw = list(reader)
    assert all(row["source"] and "@" in row["source"] or row["source"].startswith("http") for row in raw)
    assert all(row["use"] == "yes" or row["use"].startswith("no: ") for row in raw), "an excluded row says why"
    rows = read_rows()
    assert len(rows) == sum(row["use"] == "yes" for row in raw) >= 100
    for backend in BACKENDS:
        mine = [r for r in rows if r.backend == backend]
        assert sum(r.heldout for r in mine) >= 8 and sum(not r.heldout for r in mine) >= 30
    reuse = {r.settings.reuse_factor for r in rows if r.kind == "mlp"}
    assert {1, 2, 4, 8, 16, 32, 64, 128, 256} <= reuse


def test_the_split_is_a_hash_of_the_configuration_not_a_choice():
    settings = Settings(reuse_factor=4)
    assert is_heldout("Vitis", "x", settings) == is_heldout("Vitis", "x", Settings(reuse_factor=4))
    flags = [is_heldout("Vivado", f"design-{i}", settings) for i in range(2000)]
    assert 0.25 < sum(flags) / len(flags) < 0.35


@pytest.mark.parametrize("backend,quantity", sorted(PINNED))
def test_heldout_error_stays_pinned(backend, quantity):
    held = [r for r in read_rows() if r.backend == backend and r.heldout]
    errs = errors(held, calibrated(backend), quantity)
    mean = sum(errs) / len(errs)
    assert mean <= PINNED[backend, quantity], (
        f"{backend} {quantity}: held-out mean error {mean:.3f} is worse than the pinned {PINNED[backend, quantity]}")
    assert calibrated(backend)["heldout_error"][quantity] == pytest.approx(mean)


def test_the_goals_are_met_within_their_scope():
    """Issue 19's goals on held-out rows, for MLPs across reuse factors and the CNNs of issue 18: met for every
    quantity of both backends. Beyond that scope is one held-out row per backend, a 32-bit depthwise Conv2D
    (io_stream): Vivado HLS puts its 27 products in 54 DSPs, as the DSP48's tiles count, but Vitis HLS in 18,
    which the estimate misses threefold, so Vitis DSP over all held-out rows (pinned above) is not within the goal."""
    table = heldout_table()
    assert {(t["backend"], t["quantity"]) for t in table if t["goal_mean"] > t["goal"]} == set()
    beyond = [r for r in read_rows() if not r.in_goal_scope]
    assert {r.layers.split()[1].split(":")[0] for r in beyond} == {"dwconv1d", "dwconv2d"}
    assert sorted((r.backend, r.tiles) for r in beyond if r.heldout) == [("Vitis", 2), ("Vivado", 2)]
    assert all(t["goal_rows"] == t["rows"] - 1 for t in table)
    unmet = {(t["backend"], t["quantity"]) for t in table if t["mean"] > t["goal"]}
    assert unmet <= {("Vitis", "dsp")}


def test_no_heldout_row_was_fitted_on():
    for backend in BACKENDS:
        constants = calibrated(backend)
        train = [r for r in read_rows() if r.backend == backend and not r.heldout]
        assert constants["fit_rows"] == len(train)
    # refitting without the held-out rows is what calibrated() does: adding them can only lower the fit error
    rows = [r for r in read_rows() if r.backend == "Vitis"]
    assert all(predict(r, calibrated("Vitis"), "dsp") >= 0 for r in rows)


def test_the_estimate_of_the_demo_design_against_vitis_synthesis():
    """The demo (examples/jet-tagger.yaml): the tutorial's jet tagger, ap_fixed<16,6>, RF 1, Vitis, 5 ns, against
    the Vitis HLS reports of that design in the table: three trainings of it, 1,502 to 2,557 DSPs (the weights
    decide which products get a DSP). Without the weights the estimate takes a trained model's fitted share."""
    reports = [r for r in read_rows() if r.backend == "Vitis" and r.design == "jet-tagger-16-64-32-32-5"
               and r.settings.reuse_factor == 1 and not r.settings.pruned]
    assert len(reports) == 3
    design = "input:16 dense:64 relu dense:32 relu dense:32 relu dense:5 softmax"
    total = estimate(shapes_from_nodes(parse(design), Settings()), 5.0, backend="Vitis")["total"]
    for quantity in QUANTITIES:
        measured = sum(r.measured[quantity] for r in reports) / len(reports)
        miss = abs(total[quantity] - measured) / max(measured, FLOOR[quantity])
        assert miss <= GOAL[quantity], f"{quantity}: estimate {total[quantity]}, synthesis {measured:.0f}"
