"""SYNTHETIC stand-in for the hls4ml LHC jet data set (OpenML 42468).

This module fabricates jets with pure numpy so that training, quantisation
and synthesis pipelines can run on offline machines and in CI. It is NOT the
real ``hls4ml_lhc_jets_hlf`` data: nothing here was fitted to, copied from or
sampled out of it, and any data set, model or report built from this
generator must be labelled *synthetic* everywhere it appears.

The 16 columns carry the real data set's names and order and roughly its
units (GeV for the groomed mass, a count for the multiplicity, dimensionless
energy-correlation observables otherwise). Each jet is drawn from a few
latent variables -- a transverse momentum near 1 TeV, a colour/radiation
level, its number of hard prongs and whether soft-drop (mMDT) grooming threw a
prong away -- and every observable is a noisy function of those latents, so
features are correlated the way the physics suggests and classes overlap.

Class signatures:

* ``g`` gluon: one prong, broad falling groomed mass, the most radiation, so
  the highest multiplicity of the light jets and the highest N2/D2/C2.
* ``q`` light quark: one prong, a lighter falling mass than gluons, less
  radiation and fewer constituents.
* ``w`` W boson: two prongs, mass peak near 80 GeV, low N2/D2/C2, colour
  singlet so little radiation; multiplicity between quarks and gluons.
* ``z`` Z boson: like W with the peak near 91 GeV; W and Z are heavily
  confused, as in the real data.
* ``t`` top quark: three prongs, mass peak near 173 GeV with a tail,
  intermediate N2/D2, the highest multiplicity.

A fraction of W/Z/top jets fail grooming: a prong is removed, the mass drops
(tops often to the W peak) and the substructure looks one prong fewer.
"""

import numpy as np

FEATURES: tuple[str, ...] = (
    "j_zlogz",
    "j_c1_b0_mmdt",
    "j_c1_b1_mmdt",
    "j_c1_b2_mmdt",
    "j_c2_b1_mmdt",
    "j_c2_b2_mmdt",
    "j_d2_b1_mmdt",
    "j_d2_b2_mmdt",
    "j_d2_a1_b1_mmdt",
    "j_d2_a1_b2_mmdt",
    "j_m2_b1_mmdt",
    "j_m2_b2_mmdt",
    "j_n2_b1_mmdt",
    "j_n2_b2_mmdt",
    "j_mass_mmdt",
    "j_multiplicity",
)

CLASSES: tuple[str, ...] = ("g", "q", "w", "z", "t")

# Per-class latent parameters, indexed by class (g, q, w, z, t).
_RADIATION = np.array([1.00, 0.50, 0.40, 0.42, 0.80])  # colour: C_A > C_F > singlet
_PRONGS = np.array([1, 1, 2, 2, 3])  # hard prongs of the decay
_GROOM_FAIL = np.array([0.0, 0.0, 0.12, 0.12, 0.18])  # P(grooming drops a prong)
_PEAK = np.array([0.0, 0.0, 80.4, 91.2, 173.0])  # resonance mass [GeV]
_QCD_MASS = {0: (1.4, 28.0), 1: (1.4, 23.0)}  # gamma (shape, scale [GeV])
# Typical N2-like ratio e3 / e2^2 for 1, 2 and 3 groomed prongs.
_PRONG_RATIO = np.array([0.0, 0.40, 0.19, 0.29])


def _smear(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Multiplicative log-normal noise with median 1."""
    return np.exp(sigma * rng.standard_normal(n))


def synthetic_jets(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` synthetic jets.

    Returns ``X`` float32 of shape (n, 16): raw, unscaled features in the
    order of ``FEATURES``; and ``y`` int64 of shape (n,): the index into
    ``CLASSES``. Deterministic in ``(n, seed)``.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=n).astype(np.int64)

    # --- latent variables -------------------------------------------------
    pt = 1000.0 * _smear(rng, n, 0.12)  # jet pT [GeV]
    rad = _RADIATION[y] * np.exp(rng.laplace(0.0, 0.15, n))  # soft-radiation level
    true_prongs = _PRONGS[y]
    failed = rng.random(n) < _GROOM_FAIL[y]
    prongs = true_prongs - failed  # prongs surviving the groomer

    # --- groomed (mMDT) mass ----------------------------------------------
    mass = np.empty(n)
    for k, (shape, scale) in _QCD_MASS.items():  # falling QCD spectrum
        sel = y == k
        mass[sel] = 4.0 + rng.gamma(shape, scale, sel.sum()) * pt[sel] / 1000.0
    res = (y >= 2) & ~failed  # resonance reconstructed with ~10% resolution
    mass[res] = _PEAK[y[res]] * (1.0 + 0.20 * rng.standard_normal(res.sum()))
    top = res & (y == 4)  # extra high tail from radiation caught in the jet
    mass[top] += rng.exponential(14.0, top.sum())
    # Groomed-away prong: W/Z fall to a soft QCD-like mass; tops lose either
    # the b quark (leaving the W peak) or a light quark (broad b+q mass).
    lost = failed & (y < 4)
    mass[lost] = 6.0 + rng.gamma(1.6, 14.0, lost.sum())
    lost_t = failed & (y == 4)
    keeps_w = rng.random(n) < 0.5
    mass[lost_t & keeps_w] = 80.4 * (1.0 + 0.11 * rng.standard_normal((lost_t & keeps_w).sum()))
    bq = lost_t & ~keeps_w
    mass[bq] = 30.0 + rng.gamma(3.0, 22.0, bq.sum())
    mass = np.maximum(mass, 1.0)

    # --- constituent multiplicity and energy sharing (ungroomed jet) ------
    mean_mult = (12.0 + 36.0 * rad + 6.0 * (true_prongs - 1)) * (pt / 1000.0) ** 0.3
    mult = rng.poisson(mean_mult * rng.gamma(25.0, 1.0 / 25.0, n))
    mult = np.maximum(mult, 2)
    # Effective number of energy carriers; zlogz = sum z log z = -log(n_eff).
    n_eff = mult**0.62 * (1.0 + 0.25 * (true_prongs - 1)) * rad**0.5 * _smear(rng, n, 0.12)
    n_eff = np.maximum(n_eff, 1.05)
    zlogz = -np.log(n_eff)
    # C1 with beta=0 is half of (1 - sum z^2) on the groomed jet.
    groomed_eff = np.maximum(n_eff * (0.55 + 0.1 * prongs) * _smear(rng, n, 0.12), 1.05)
    c1_b0 = 0.5 * (1.0 - 1.0 / groomed_eff)

    # --- energy correlation functions on the groomed jet -------------------
    # e2 ~ (m/pT)^beta: C1 for beta = 1, 2 share the mass and one noise term.
    shared = rng.standard_normal(n)
    x = mass / pt
    c1_b1 = 0.9 * x * np.exp(0.10 * shared + 0.05 * rng.standard_normal(n))
    c1_b2 = 0.8 * x**2 * np.exp(0.16 * shared + 0.08 * rng.standard_normal(n))

    # Prong structure: the N2-like ratio e3/e2^2 is high for one prong, low for
    # two, intermediate for three; more radiation pushes it up (gluons).
    ratio = (
        _PRONG_RATIO[prongs]
        * (rad / 0.6) ** 0.6
        * _smear(rng, n, 0.28)
    )
    three = (prongs == 3).astype(float)
    common = rng.standard_normal(n)  # shared by the beta = 1 / 2 partners

    def pair(scale, power, s_common, s_own, boost=0.0):
        """beta=1 and beta=2 versions of a ratio observable, correlated."""
        base = ratio * (1.0 + boost * three)
        b1 = scale * base * np.exp(s_common * common + s_own * rng.standard_normal(n))
        b2 = scale * 0.8 * base**power * np.exp(
            1.2 * s_common * common + s_own * rng.standard_normal(n)
        )
        return b1, b2

    n2_b1, n2_b2 = pair(1.0, 1.15, 0.08, 0.05)
    # C2 uses the full three-point e3, so it is more sensitive to a third prong.
    c2_b1, c2_b2 = pair(0.55, 1.1, 0.08, 0.06, boost=0.5)
    # D2 = C2 / e2: the ratio divided by a power of the groomed mass fraction.
    d2_b1 = 0.12 * c2_b1 / (c1_b1 + 0.04) ** 0.8
    d2_b2 = 0.06 * c2_b2 / (c1_b2 + 0.004) ** 0.4
    d2_a1_b1 = d2_b1 ** 0.8 * 0.9 * _smear(rng, n, 0.08)
    d2_a1_b2 = d2_b2 ** 0.8 * 0.9 * _smear(rng, n, 0.08)
    # M2 = e3(1)/e2: mostly soft radiation within the prongs.
    soft = rad**0.8 * _smear(rng, n, 0.25)
    m2_b1 = 0.06 * soft * (0.6 + ratio) * _smear(rng, n, 0.12)
    m2_b2 = 0.04 * soft**1.2 * (0.6 + ratio) * _smear(rng, n, 0.12)

    X = np.column_stack(
        [
            zlogz,
            c1_b0,
            c1_b1,
            c1_b2,
            c2_b1,
            c2_b2,
            d2_b1,
            d2_b2,
            d2_a1_b1,
            d2_a1_b2,
            m2_b1,
            m2_b2,
            n2_b1,
            n2_b2,
            mass,
            mult,
        ]
    ).astype(np.float32)
    return X, y
