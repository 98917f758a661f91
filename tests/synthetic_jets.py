"""A test fixture, not fpgaflow's data: a SYNTHETIC stand-in for the hls4ml LHC jet data set (OpenML 42468).

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

A few per cent of W/Z/top jets fail grooming: a prong is removed, the mass
drops (for half of those tops, to the W peak) and the substructure looks one
prong fewer. The resonance mass is smeared coarsely (23%) so W and Z overlap.

Difficulty is tuned to resemble the real set: a float Dense 64-32-32-5 MLP on
standard-scaled features reaches about 0.77 test accuracy after 10 epochs on
200,000 jets, and about 0.69 (2 epochs) to 0.72 (3 epochs) on 20,000 jets.
No single feature on its own separates the classes.
"""

import numpy as np

from fpgaflow_trainer.jets import CLASSES

# Per-class latent parameters, indexed like CLASSES (g, q, w, z, t).
_RADIATION = np.array([1.00, 0.50, 0.40, 0.42, 0.80])  # colour: C_A > C_F > singlet
_PRONGS = np.array([1, 1, 2, 2, 3])  # hard prongs of the decay
_GROOM_FAIL = np.array([0.0, 0.0, 0.05, 0.05, 0.08])  # P(grooming drops a prong)
_PEAK = np.array([0.0, 0.0, 80.4, 91.2, 173.0])  # resonance mass [GeV]
_QCD_MASS_SCALE = np.array([28.0, 23.0, 1.0, 1.0, 1.0])  # gluons heavier; w/z/t unused
_MASS_RES = 0.23  # relative mass resolution: W and Z overlap heavily
# Typical N2-like ratio e3 / e2^2 for 0 (unused), 1, 2 and 3 groomed prongs.
_PRONG_RATIO = np.array([0.0, 0.40, 0.19, 0.26])


def _smear(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Multiplicative log-normal noise with median 1."""
    return np.exp(sigma * rng.standard_normal(n))


def synthetic_jets(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` synthetic jets (balanced, randomly assigned classes).

    Returns ``X`` float32 of shape (n, 16): raw, unscaled features in the
    order of ``FEATURES``; and ``y`` int64 of shape (n,): the index into
    ``CLASSES``. Deterministic in ``(n, seed)``.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), size=n).astype(np.int64)
    qcd = y < 2

    # --- latent variables -------------------------------------------------
    pt = 1000.0 * _smear(rng, n, 0.12)  # jet pT [GeV]
    rad = _RADIATION[y] * _smear(rng, n, 0.23)  # soft-radiation level
    true_prongs = _PRONGS[y]
    failed = rng.random(n) < _GROOM_FAIL[y]
    prongs = true_prongs - failed  # prongs surviving the groomer

    # --- groomed (mMDT) mass [GeV] ------------------------------------------
    # Every candidate is drawn for every jet (simple and vectorised); the
    # class and the grooming flag then pick one.
    qcd_mass = 4.0 + rng.gamma(1.4, _QCD_MASS_SCALE[y]) * pt / 1000.0  # falling
    peak_mass = _PEAK[y] * (1.0 + _MASS_RES * rng.standard_normal(n))
    peak_mass += np.where(y == 4, rng.exponential(14.0, n), 0.0)  # top high tail
    # Groomed-away prong: W/Z fall to a soft, QCD-like mass; a top loses
    # either its b quark (leaving the W peak) or a light quark (broad b+q).
    lost_vz_mass = 6.0 + rng.gamma(1.6, 14.0, n)
    lost_top_mass = np.where(
        rng.random(n) < 0.5,
        80.4 * (1.0 + 0.11 * rng.standard_normal(n)),
        30.0 + rng.gamma(3.0, 22.0, n),
    )
    mass = np.select([qcd, ~failed, y < 4], [qcd_mass, peak_mass, lost_vz_mass], lost_top_mass)
    mass = np.maximum(mass, 1.0)

    # --- constituent multiplicity and energy sharing (ungroomed jet) ------
    # Over-dispersed Poisson: more radiation and more prongs, more particles.
    mean_mult = (12.0 + 36.0 * rad + 6.0 * (true_prongs - 1)) * (pt / 1000.0) ** 0.3
    mult = np.maximum(rng.poisson(mean_mult * rng.gamma(25.0, 1.0 / 25.0, n)), 2)
    # Effective number of energy carriers; zlogz = sum z log z = -log(n_eff).
    n_eff = mult**0.7 * (1.0 + 0.25 * (true_prongs - 1)) * rad**0.5 * _smear(rng, n, 0.12)
    n_eff = np.maximum(n_eff, 1.05)
    zlogz = -np.log(n_eff)
    # C1 with beta=0 is half of (1 - sum z^2), taken on the groomed jet.
    groomed_eff = n_eff * (0.45 + 0.1 * prongs) * _smear(rng, n, 0.12)
    c1_b0 = 0.5 * (1.0 - 1.0 / np.maximum(groomed_eff, 1.05))

    # --- energy correlation functions on the groomed jet -------------------
    # C1 (= e2) scales like (m/pT)^beta; beta = 1 and 2 share one noise term.
    x = mass / pt
    shared = rng.standard_normal(n)
    c1_b1 = 0.9 * x * np.exp(0.10 * shared + 0.05 * rng.standard_normal(n))
    c1_b2 = 0.8 * x**2 * np.exp(0.16 * shared + 0.08 * rng.standard_normal(n))

    # Prong structure: the N2-like ratio e3/e2^2 is high for one prong, low
    # for two, intermediate for three; more radiation pushes it up (gluons).
    ratio = _PRONG_RATIO[prongs] * (rad / 0.6) ** 0.6 * _smear(rng, n, 0.28)
    three = prongs == 3
    common = rng.standard_normal(n)  # shared by each beta = 1 / 2 pair

    def pair(scale, power, s_common, s_own, three_boost=0.0):
        """beta = 1 and beta = 2 versions of a ratio observable, correlated."""
        base = ratio * np.where(three, 1.0 + three_boost, 1.0)
        b1 = scale * base * np.exp(s_common * common + s_own * rng.standard_normal(n))
        b2 = 0.8 * scale * base**power * np.exp(1.2 * s_common * common + s_own * rng.standard_normal(n))
        return b1, b2

    n2_b1, n2_b2 = pair(1.0, 1.15, 0.08, 0.05)
    # C2 uses the full three-point e3, so it responds more to a third prong.
    c2_b1, c2_b2 = pair(0.55, 1.1, 0.08, 0.06, three_boost=0.5)
    # D2 = e3 / e2^3 = C2 / e2: light jets with little groomed mass get large
    # values (a soft floor on e2 keeps the tail finite).
    d2_b1 = c2_b1 / (c1_b1 + 0.04) ** 0.8
    d2_b2 = 0.5 * c2_b2 / (c1_b2 + 0.004) ** 0.4
    # The alpha = 1 variants are flatter functions of the same quantities.
    d2_a1_b1 = 0.9 * d2_b1**0.8 * _smear(rng, n, 0.08)
    d2_a1_b2 = 0.9 * d2_b2**0.8 * _smear(rng, n, 0.08)
    # M2 = e3(1)/e2: mostly soft radiation inside the prongs.
    soft = rad**0.8 * _smear(rng, n, 0.25)
    m2_b1 = 0.06 * soft * (0.6 + ratio) * _smear(rng, n, 0.12)
    m2_b2 = 0.04 * soft**1.2 * (0.6 + ratio) * _smear(rng, n, 0.12)

    columns = [
        zlogz, c1_b0, c1_b1, c1_b2, c2_b1, c2_b2, d2_b1, d2_b2,
        d2_a1_b1, d2_a1_b2, m2_b1, m2_b2, n2_b1, n2_b2, mass, mult,
    ]  # fmt: skip
    X = np.column_stack(columns).astype(np.float32)
    return X, y
