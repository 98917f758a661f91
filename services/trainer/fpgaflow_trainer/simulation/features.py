"""The 16 high-level features of the hls4ml jet-tagging data set, computed from jet constituents.

Definitions (the data set's, after Moult, Necib and Thaler, arXiv:1609.07483, and Larkoski et al.):
with z_i = pT_i / sum pT over the jet's constituents and R_ij the distance in (rapidity, azimuth),

    e2^(b)      = sum_{i<j}     z_i z_j R_ij^b                     (C1^(b); b = 0 gives sum_{i<j} z_i z_j)
    ne3^(b)     = sum_{i<j<k}   z_i z_j z_k  x  the product of the n smallest of {R_ij^b, R_ik^b, R_jk^b}
    C2^(b)      = 3e3^(b) / (e2^(b))^2          D2^(b)    = 3e3^(b) / (e2^(b))^3
    D2^(a,b)    = 3e3^(a) / (e2^(b))^(3a/b)     M2^(b)    = 1e3^(b) / e2^(b)      N2^(b) = 2e3^(b) / (e2^(b))^2
    zlogz       = sum_i z_i log z_i  (the whole jet)            multiplicity = its number of constituents

Every ``*_mmdt`` feature is of the jet groomed by the modified mass-drop tagger (soft drop with beta = 0,
z_cut = 0.1, R0 = 0.8: C/A declustering drops the softer branch while its pT share is below z_cut).

The grooming and the energy correlators are FastJet's and its contrib's (``SoftDrop``,
``EnergyCorrelatorGeneralized``, through the ``fastjet`` wheel's awkward-array interface), run on many jets at
once: each jet is one "event" of its constituents, reclustered into exactly one C/A jet.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from fpgaflow_trainer.jets import FEATURES

JET_RADIUS = 0.8
MOMENTA = ("px", "py", "pz", "E")  # the fields of a constituent, in GeV
MMDT = {"beta": 0, "symmetry_cut": 0.1, "R0": JET_RADIUS}


def quiet_fastjet():
    """The fastjet module with FastJet's banner off: it prints the banner (authors, licence, the paper to cite:
    Cacciari, Salam, Soyez, EPJC 72 (2012) 1896) on stdout at its first clustering, in the middle of a command's
    output. The data set's record names FastJet and its version instead."""
    import fastjet
    import fastjet._swig

    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)  # shared by the SWIG and the awkward interfaces
    return fastjet


def _cluster(constituents: ak.Array):
    fastjet = quiet_fastjet()
    return fastjet.ClusterSequence(constituents, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10 * JET_RADIUS))


def _ecfg(sequence, points: int, angles: int, beta: float) -> np.ndarray:
    """The normalized generalized energy correlator (points, angles, beta) of each jet of a cluster sequence."""
    values = sequence.exclusive_jets_energy_correlator(njets=1, beta=beta, npoint=points, angles=angles,
                                                       func="generalized", normalized=True)
    return ak.to_numpy(values).astype(np.float64)


def _safe(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """A ratio that is 0 where the groomed jet has too few constituents to define it (no pair or no triple)."""
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def zlogz(pt: ak.Array) -> np.ndarray:
    z = pt / ak.sum(pt, axis=1)
    return ak.to_numpy(ak.sum(z * np.log(z), axis=1)).astype(np.float64)


def jet_features(constituents: ak.Array) -> np.ndarray:
    """The 16 features (float64, columns in ``FEATURES`` order) of each jet, from its constituents: a jagged
    array of records with fields px, py, pz, E (GeV), one list per jet."""
    if len(constituents) == 0:
        return np.zeros((0, len(FEATURES)))
    groomed = _cluster(constituents).exclusive_jets_softdrop_grooming(njets=1, **MMDT)
    inner = _cluster(ak.zip({k: groomed.constituents[k] for k in MOMENTA}))
    e2 = {beta: _ecfg(inner, 2, 1, beta) for beta in (0, 1, 2)}
    e3 = {(angles, beta): _ecfg(inner, 3, angles, beta) for angles in (1, 2, 3) for beta in (1, 2)}
    pt = np.hypot(constituents.px, constituents.py)
    values = {
        "j_zlogz": zlogz(pt),
        **{f"j_c1_b{beta}_mmdt": e2[beta] for beta in (0, 1, 2)},
        **{f"j_c2_b{beta}_mmdt": _safe(e3[3, beta], e2[beta] ** 2) for beta in (1, 2)},
        **{f"j_d2_b{beta}_mmdt": _safe(e3[3, beta], e2[beta] ** 3) for beta in (1, 2)},
        **{f"j_d2_a1_b{beta}_mmdt": _safe(e3[3, 1], e2[beta] ** (3 / beta)) for beta in (1, 2)},
        **{f"j_m2_b{beta}_mmdt": _safe(e3[1, beta], e2[beta]) for beta in (1, 2)},
        **{f"j_n2_b{beta}_mmdt": _safe(e3[2, beta], e2[beta] ** 2) for beta in (1, 2)},
        "j_mass_mmdt": ak.to_numpy(groomed.msoftdrop).astype(np.float64),
        "j_multiplicity": ak.to_numpy(ak.num(constituents, axis=1)).astype(np.float64),
    }
    return np.stack([values[name] for name in FEATURES], axis=1)
