"""The 16 jet features (fpgaflow_trainer.simulation.features) on constituent lists small enough to compute by
hand: three massless particles at chosen (rapidity, azimuth) with pT shares 1/2, 1/4, 1/4, and the same jet
with a soft wide-angle particle that the mMDT grooming removes."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest

from fpgaflow_trainer.jets import FEATURES
from fpgaflow_trainer.simulation.features import jet_features

# (pT GeV, rapidity, azimuth): pairwise distances R12 = 0.3, R13 = 0.4, R23 = 0.5
THREE = [(200.0, 0.0, 0.0), (100.0, 0.3, 0.0), (100.0, 0.0, 0.4)]
SOFT = (10.0, -0.5, -0.55)  # R = 0.74 from the first particle; pT share 10/410 < z_cut


def constituents(*jets: list[tuple[float, float, float]]) -> ak.Array:
    """Massless four-vectors (px, py, pz, E) from (pT, rapidity, azimuth), one list per jet."""
    columns: dict[str, list[list[float]]] = {k: [] for k in ("px", "py", "pz", "E")}
    for jet in jets:
        pt, y, phi = (np.array(c) for c in zip(*jet, strict=True))
        for key, value in (("px", pt * np.cos(phi)), ("py", pt * np.sin(phi)), ("pz", pt * np.sinh(y)), ("E", pt * np.cosh(y))):
            columns[key].append(value.tolist())
    return ak.zip({k: ak.Array(v) for k, v in columns.items()})


def by_hand() -> dict[str, float]:
    z1, z2, z3 = 0.5, 0.25, 0.25
    r12, r13, r23 = 0.3, 0.4, 0.5
    pairs = [(z1 * z2, r12), (z1 * z3, r13), (z2 * z3, r23)]
    zzz = z1 * z2 * z3

    def e2(beta):
        return sum(zz * r ** beta for zz, r in pairs)

    def e3(angles, beta):  # the product of the `angles` smallest of the three pairwise R^beta
        return zzz * math.prod(sorted(r ** beta for r in (r12, r13, r23))[:angles])

    expected = {"j_zlogz": z1 * math.log(z1) + 2 * z2 * math.log(z2), "j_c1_b0_mmdt": 0.3125}
    for beta in (1, 2):
        expected |= {
            f"j_c1_b{beta}_mmdt": e2(beta),
            f"j_c2_b{beta}_mmdt": e3(3, beta) / e2(beta) ** 2,
            f"j_d2_b{beta}_mmdt": e3(3, beta) / e2(beta) ** 3,
            f"j_d2_a1_b{beta}_mmdt": e3(3, 1) / e2(beta) ** (3 / beta),
            f"j_m2_b{beta}_mmdt": e3(1, beta) / e2(beta),
            f"j_n2_b{beta}_mmdt": e3(2, beta) / e2(beta) ** 2,
        }
    # the invariant mass of three massless particles: m^2 = sum_{i<j} 2 pTi pTj (cosh(dy) - cos(dphi))
    m2 = sum(2 * a[0] * b[0] * (math.cosh(a[1] - b[1]) - math.cos(a[2] - b[2]))
             for i, a in enumerate(THREE) for b in THREE[i + 1:])
    expected["j_mass_mmdt"] = math.sqrt(m2)
    expected["j_multiplicity"] = 3
    return expected


def test_the_features_of_three_particles_are_the_hand_computed_ones():
    [row] = jet_features(constituents(THREE))
    expected = by_hand()
    assert len(expected) == len(FEATURES) == 16
    for name, value in zip(FEATURES, row, strict=True):
        assert value == pytest.approx(expected[name], rel=1e-6), name
    # worked numbers for a reader: e2^(1) = 0.125*0.3 + 0.125*0.4 + 0.0625*0.5
    assert expected["j_c1_b1_mmdt"] == pytest.approx(0.11875)


def test_mmdt_drops_a_soft_wide_angle_particle_but_the_whole_jet_counts_it():
    plain, with_soft = jet_features(constituents(THREE, [*THREE, SOFT]))
    index = {name: i for i, name in enumerate(FEATURES)}
    groomed = [name for name in FEATURES if name.endswith("_mmdt")]
    assert all(with_soft[index[n]] == pytest.approx(plain[index[n]], rel=1e-6) for n in groomed), \
        "the soft particle's pT share (2.4 %) is below z_cut: grooming removes it"
    assert with_soft[index["j_multiplicity"]] == 4
    assert with_soft[index["j_zlogz"]] < plain[index["j_zlogz"]], "zlogz is of the whole jet"


def test_a_two_prong_jet_has_a_lower_n2_than_a_three_prong_one():
    """N2 and D2 separate two-prong jets (W, Z) from three-prong ones (top): the substructure the tagger uses."""
    two = [(300.0, 0.0, 0.0), (290.0, 0.35, 0.1), (3.0, 0.02, 0.01), (3.0, 0.36, 0.12)]
    three = [(200.0, 0.0, 0.0), (190.0, 0.35, 0.1), (180.0, -0.1, 0.4), (3.0, 0.02, 0.01)]
    rows = jet_features(constituents(two, three))
    n2 = FEATURES.index("j_n2_b1_mmdt")
    assert rows[0, n2] < rows[1, n2]


def test_a_single_particle_has_zero_correlations_not_nan():
    [row] = jet_features(constituents([(500.0, 0.1, 0.2)]))
    assert np.isfinite(row).all()
    assert row[FEATURES.index("j_c2_b1_mmdt")] == 0 and row[FEATURES.index("j_multiplicity")] == 1
