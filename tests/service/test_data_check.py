"""`fpgaflow data check`: the simulated jets beside the public set's known shapes, a plot, and the tutorial MLP's
accuracy next to its published 0.76."""

from __future__ import annotations

import json

import pytest

from tests.conftest import fpgaflow

pytestmark = pytest.mark.slow


def test_data_check_finds_the_known_shapes_and_reports_the_tutorial_accuracy(tmp_path):
    done = fpgaflow("data", "check", "--samples", "5000", "--epochs", "10", "--out", str(tmp_path))
    out = " ".join(done.stdout.split())
    assert "simulated with Pythia 8.317.2 and FastJet 3.5.2, no detector simulation" in out
    assert "differs" not in out and out.count(" ok ") + out.endswith(" ok") >= 7, done.stdout
    assert "the tutorial's on the public set (with its detector simulation): 0.76" in out
    result = json.loads((tmp_path / "check.json").read_text())
    assert [c["check"] for c in result["checks"]][:3] == [f"groomed mass of {c} jets" for c in "wzt"]
    assert all(c["passed"] for c in result["checks"]), result["checks"]
    assert result["mlp"]["accuracy"] > 0.5 and result["mlp"]["test"] == 1000
    assert (tmp_path / "features.png").read_bytes()[:4] == b"\x89PNG"


def test_data_check_refuses_a_data_set_without_jet_features(tmp_path):
    manifest = tmp_path / "digits.yaml"
    manifest.write_text("apiVersion: fpgaflow.io/v1alpha1\nkind: Experiment\nmetadata: {name: d}\nspec:\n  dataset: {name: digits}\n")
    done = fpgaflow("data", "check", str(manifest), check=False)
    assert done.returncode != 0
    assert "data check compares the jets data set's 16 features; this manifest's data set is digits" in done.stderr
