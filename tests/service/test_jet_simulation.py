"""Jets simulated with Pythia 8 and clustered with FastJet (fpgaflow_trainer.simulation.pythia): reproducible from
a seed, in the pT window, and with the physics the tagger learns (groomed-mass peaks at the W, Z and top masses,
more constituents in gluon jets, two-prong jets with a lower N2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fpgaflow_trainer.jets import FEATURES
from fpgaflow_trainer.simulation.features import jet_features
from fpgaflow_trainer.simulation.images import jet_images
from fpgaflow_trainer.simulation.pythia import PT_WINDOW_GEV, generate
from fpgaflow_trainer.simulation.sets import Recipe, load_or_simulate

pytestmark = pytest.mark.slow


def column(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[:, FEATURES.index(name)]


@pytest.fixture(scope="module")
def simulated() -> dict[str, np.ndarray]:
    return {label: jet_features(generate(label, 30, seed=11)) for label in "gqwzt"}


def test_the_same_seed_gives_the_same_jets_and_another_seed_others():
    first, again, other = generate("w", 4, seed=3), generate("w", 4, seed=3), generate("w", 4, seed=4)
    assert first.px.to_list() == again.px.to_list()
    assert first.px.to_list() != other.px.to_list()


def test_every_jet_is_in_the_pt_window():
    jets = generate("q", 10, seed=5)
    pt = np.hypot(np.sum(jets.px, axis=1).to_numpy(), np.sum(jets.py, axis=1).to_numpy())
    assert (pt >= PT_WINDOW_GEV[0]).all() and (pt <= PT_WINDOW_GEV[1]).all(), pt


def test_groomed_masses_peak_at_the_resonances(simulated):
    median = {label: float(np.median(column(rows, "j_mass_mmdt"))) for label, rows in simulated.items()}
    assert 70 < median["w"] < 90 and 80 < median["z"] < 100 and 155 < median["t"] < 190, median
    assert median["q"] < 40, median


def test_gluon_jets_have_more_constituents_and_two_prong_jets_a_lower_n2(simulated):
    multiplicity = {label: np.median(column(rows, "j_multiplicity")) for label, rows in simulated.items()}
    assert multiplicity["g"] > 1.5 * multiplicity["q"], multiplicity
    n2 = {label: np.median(column(rows, "j_n2_b1_mmdt")) for label, rows in simulated.items()}
    assert n2["w"] < n2["q"] and n2["z"] < n2["g"], n2


def test_an_unknown_class_is_refused_by_name():
    with pytest.raises(ValueError, match="no simulated process for class 'b'; the classes are g, q, w, z, t, qcd"):
        generate("b", 1, seed=1)


def test_a_set_is_the_same_whatever_the_number_of_worker_processes(tmp_path):
    recipe = Recipe({"w": 5, "t": 3}, seed=2, pt_window=PT_WINDOW_GEV, chunk=2)
    alone = load_or_simulate(recipe, tmp_path / "one", workers=1)
    shared = load_or_simulate(recipe, tmp_path / "two", workers=2)
    assert alone.constituents.px.to_list() == shared.constituents.px.to_list()
    np.testing.assert_array_equal(alone.features, shared.features)
    assert alone.labels.tolist() == shared.labels.tolist() == [0] * 5 + [1] * 3


def test_the_cache_is_reused_grown_and_keyed_by_what_shapes_the_set(tmp_path):
    """Chunks are the cache's unit: the same recipe reads them all; a larger set of the same seed makes only
    the chunks it lacks and begins with the smaller set; another seed or pT window makes its own."""
    small = Recipe({"z": 4}, seed=5, pt_window=PT_WINDOW_GEV, chunk=2)
    made = load_or_simulate(small, tmp_path)
    assert (made.made, made.reused) == (2, 0)
    again = load_or_simulate(small, tmp_path)
    assert (again.made, again.reused) == (0, 2) and np.array_equal(again.features, made.features)
    larger = load_or_simulate(Recipe({"z": 6}, seed=5, pt_window=PT_WINDOW_GEV, chunk=2), tmp_path)
    assert (larger.made, larger.reused) == (1, 2)
    np.testing.assert_array_equal(larger.features[:4], made.features)
    reseeded = load_or_simulate(Recipe({"z": 4}, seed=6, pt_window=PT_WINDOW_GEV, chunk=2), tmp_path)
    assert (reseeded.made, reseeded.reused) == (2, 0) and not np.array_equal(reseeded.features, made.features)
    lower = load_or_simulate(Recipe({"z": 4}, seed=5, pt_window=(600.0, 700.0), chunk=2), tmp_path)
    assert lower.made == 2
    pt = np.hypot(np.sum(lower.constituents.px, axis=1).to_numpy(), np.sum(lower.constituents.py, axis=1).to_numpy())
    assert ((pt >= 600) & (pt <= 700)).all(), pt


def test_top_jet_images_are_centred_and_normalized():
    images = jet_images(generate("t", 5, seed=9), size=24)
    assert images.shape == (5, 24, 24) and images.dtype == np.float32
    assert np.allclose(images.sum(axis=(1, 2)), 1, atol=1e-5)
    rows, cols = np.indices((24, 24))
    centre = [(float((img * rows).sum()), float((img * cols).sum())) for img in images]
    assert all(abs(r - 11.5) < 3 and abs(c - 11.5) < 3 for r, c in centre), centre


def test_a_worker_s_failure_is_raised_by_name_and_no_worker_is_left(tmp_path):
    from fpgaflow_trainer.simulation import workers

    bad = {"kind": "b-jets", "class": "b", "chunk": 0, "jets": 2, "seed": 1, "ptWindow": [800, 1200]}
    before = set(children())  # the session's servers, say
    with pytest.raises(workers.WorkerFailed, match="no simulated process for class 'b'"):
        workers.run(tmp_path, [bad, {**bad, "chunk": 1}], 2, lambda chunk: None)
    assert set(children()) <= before, "every worker stopped"


def children() -> list[int]:
    """This process's child processes (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found
