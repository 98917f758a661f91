"""Jets simulated with Pythia 8 and clustered with FastJet (fpgaflow_trainer.simulation.pythia): reproducible from
a seed, in the pT window, and with the physics the tagger learns (groomed-mass peaks at the W, Z and top masses,
more constituents in gluon jets, two-prong jets with a lower N2)."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow_trainer.jets import FEATURES
from fpgaflow_trainer.simulation.features import jet_features
from fpgaflow_trainer.simulation.images import jet_images
from fpgaflow_trainer.simulation.pythia import PT_WINDOW_GEV, generate, simulate

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
    with pytest.raises(ValueError, match="no simulated process for class 'b'; the classes are g, q, w, z, t"):
        generate("b", 1, seed=1)


def test_a_set_is_the_same_whatever_the_number_of_worker_processes():
    counts = {"w": 5, "t": 3}
    alone, labels = simulate(counts, seed=2, workers=1, chunk=2)
    shared, same_labels = simulate(counts, seed=2, workers=2, chunk=2)
    assert alone.px.to_list() == shared.px.to_list()
    assert labels.tolist() == same_labels.tolist() == ["w"] * 5 + ["t"] * 3


def test_top_jet_images_are_centred_and_normalized():
    images = jet_images(generate("t", 5, seed=9), size=24)
    assert images.shape == (5, 24, 24) and images.dtype == np.float32
    assert np.allclose(images.sum(axis=(1, 2)), 1, atol=1e-5)
    rows, cols = np.indices((24, 24))
    centre = [(float((img * rows).sum()), float((img * cols).sum())) for img in images]
    assert all(abs(r - 11.5) < 3 and abs(c - 11.5) < 3 for r, c in centre), centre
