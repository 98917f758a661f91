"""Boosted jets of the five classes of the hls4ml jet-tagging data set, simulated with Pythia 8 (pp at 13 TeV)
and clustered with FastJet (anti-kT, R = 0.8) from the visible final-state particles; no detector simulation.

    g  gluon jets       HardQCD gg -> gg, qqbar -> gg            matched to an outgoing hard gluon
    q  light-quark jets HardQCD qq -> qq, qqbar -> q'qbar'       matched to an outgoing hard u, d, s or c quark
    w  W -> qq'          WeakDoubleBoson ffbar -> WW, W hadronic  matched to a W whose decay quarks are all inside
    z  Z -> qq           WeakDoubleBoson ffbar -> ZZ (Z only), hadronic matched to a Z whose decay quarks are all inside
    t  t -> bW -> bqq'   Top gg, qqbar -> ttbar, W hadronic       matched to a top whose b and W quarks are all inside
    qcd  QCD jets       HardQCD:all (the top-tagging set's background) matched to an outgoing hard quark or gluon

"Matched": the jet's axis lies within R of the particle and, for W, Z and top, every quark of its decay lies
within R of the axis (the decay is contained in the jet). Each event gives at most one jet: the hardest one
that is matched and whose pT lies in the window. Events are generated with pT-hat from 100 GeV below the
window's lower edge, which keeps most of them useful.

``generate(label, n, seed)`` is reproducible: the same arguments give the same jets (Pythia's own random
engine, seeded from ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from fpgaflow.errors import NotInstalled
from fpgaflow_trainer.simulation.features import JET_RADIUS, MOMENTA, quiet_fastjet

ENERGY_GEV = 13000.0
PT_WINDOW_GEV = (800.0, 1200.0)
DECAYS_TO_QUARKS = "onIfAny = 1 2 3 4 5"


@dataclass(frozen=True)
class Process:
    settings: tuple[str, ...]
    matched_ids: frozenset[int]  # |PDG id| of the particle a jet is matched to
    resonance: bool  # match a decaying resonance whose decay quarks must all be in the jet (else a hard parton)


PROCESSES: dict[str, Process] = {
    "g": Process(("HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on"), frozenset({21}), False),
    "q": Process(("HardQCD:qq2qq = on", "HardQCD:qqbar2qqbarNew = on"), frozenset({1, 2, 3, 4}), False),
    "w": Process(("WeakDoubleBoson:ffbar2WW = on", "24:onMode = off", f"24:{DECAYS_TO_QUARKS}"), frozenset({24}), True),
    "z": Process(("WeakDoubleBoson:ffbar2gmZgmZ = on", "WeakZ0:gmZmode = 2", "23:onMode = off", f"23:{DECAYS_TO_QUARKS}"),
                 frozenset({23}), True),
    "t": Process(("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", f"24:{DECAYS_TO_QUARKS}"),
                 frozenset({6}), True),
    "qcd": Process(("HardQCD:all = on",), frozenset({1, 2, 3, 4, 5, 21}), False),
}
QUIET = ("Print:quiet = on", "Next:numberCount = 0", "Next:numberShowEvent = 0", "Next:numberShowInfo = 0",
         "Next:numberShowProcess = 0")


def process(label: str) -> Process:
    if label not in PROCESSES:
        raise ValueError(f"no simulated process for class {label!r}; the classes are {', '.join(PROCESSES)}")
    return PROCESSES[label]


NOT_INSTALLED = ("simulated jets need Pythia 8's Python package (pythia8mc 8.317.2, binary wheels for CPython "
                 "3.10 to 3.12): pip install pythia8mc==8.317.2, or give a data file in dataset.path")


def pythia_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pythia8mc")
    except PackageNotFoundError:
        raise NotInstalled(NOT_INSTALLED) from None


def _pythia(label: str, seed: int, pt_window: tuple[float, float]):
    try:
        import pythia8mc
    except ImportError as exc:
        raise NotInstalled(NOT_INSTALLED) from exc

    process(label)
    if not 0 <= seed < 900_000_000:
        raise ValueError(f"seed {seed} is outside Pythia's range 0..899999999")
    pythia = pythia8mc.Pythia("", False)
    for line in (*QUIET, f"Beams:eCM = {ENERGY_GEV}", f"PhaseSpace:pTHatMin = {max(pt_window[0] - 100.0, 0.0)}",
                 "Random:setSeed = on", f"Random:seed = {seed}", *PROCESSES[label].settings):
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia refused the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia did not initialize for class {label!r}")
    return pythia


def _delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    dphi = (np.asarray(phi1) - np.asarray(phi2) + np.pi) % (2 * np.pi) - np.pi
    return np.hypot(np.asarray(eta1) - np.asarray(eta2), dphi)


def _targets(particles: list, process: Process) -> list[tuple[float, float, list[tuple[float, float]]]]:
    """(eta, phi, decay quarks' (eta, phi)) of each particle of the event (``Event.particles()``) a jet of this
    process may be matched to."""
    found = []
    for particle in particles:
        if particle.idAbs() not in process.matched_ids:
            continue
        if not process.resonance:
            if abs(particle.status()) == 23:  # an outgoing parton of the hardest process
                found.append((particle.eta(), particle.phi(), []))
            continue
        first, last = particle.daughter1(), particle.daughter2()
        daughters = particles[first:last + 1] if first > 0 else []
        if not daughters or any(d.idAbs() == particle.idAbs() for d in daughters):
            continue  # not the copy that decays
        quarks = []
        for d in daughters:
            if d.idAbs() == 24:  # the top's W: its quarks
                w = d
                while particles[w.daughter1()].idAbs() == 24:
                    w = particles[w.daughter1()]
                quarks += [q for q in particles[w.daughter1():w.daughter2() + 1] if 1 <= q.idAbs() <= 5]
            elif 1 <= d.idAbs() <= 5:
                quarks.append(d)
        found.append((particle.eta(), particle.phi(), [(q.eta(), q.phi()) for q in quarks]))
    return found


def _visible(particles: list, fastjet) -> list:
    """FastJet's input: a PseudoJet (px, py, pz, E) of each visible final-state particle."""
    return [fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e()) for p in particles if p.isFinal() and p.isVisible()]


def _matched_jet(pseudo: list, targets, pt_window: tuple[float, float], fastjet) -> np.ndarray | None:
    """The constituents (n, 4) of the hardest anti-kT jet of ``pseudo`` in the window matched to one of the
    targets."""
    sequence = fastjet.ClusterSequence(pseudo, fastjet.JetDefinition(fastjet.antikt_algorithm, JET_RADIUS))
    for jet in fastjet.sorted_by_pt(sequence.inclusive_jets(pt_window[0])):
        if jet.pt() > pt_window[1]:
            continue
        for eta, phi, quarks in targets:
            if _delta_r(jet.eta(), jet.phi_std(), eta, phi) >= JET_RADIUS:
                continue
            if quarks and max(_delta_r(jet.eta(), jet.phi_std(), *zip(*quarks, strict=True))) >= JET_RADIUS:
                continue
            return np.array([(c.px(), c.py(), c.pz(), c.E()) for c in jet.constituents()], dtype=np.float64)
    return None


def generate(label: str, n: int, seed: int, pt_window: tuple[float, float] = PT_WINDOW_GEV,
             max_events_per_jet: int = 50) -> ak.Array:
    """``n`` jets of class ``label``: their constituents as a jagged array of records (px, py, pz, E in GeV),
    one list per jet."""
    pythia = _pythia(label, seed, pt_window)
    fastjet = quiet_fastjet()
    wanted = PROCESSES[label]
    jets: list[np.ndarray] = []
    events = 0
    while len(jets) < n:
        events += 1
        if events > max_events_per_jet * max(n, 1):
            raise RuntimeError(f"{events} {label} events gave {len(jets)} jets in {pt_window} GeV: the window is too narrow")
        if not pythia.next():
            continue
        # the record's particles copied into a list at once: a binding call per particle costs less on the list
        # than on the record, whose every element access is a call of its own (these Python loops over an event
        # cost as much as Pythia's generation of it)
        particles = pythia.event.particles()
        jet = _matched_jet(_visible(particles, fastjet), _targets(particles, wanted), pt_window, fastjet)
        if jet is not None:
            jets.append(jet)
    columns = {key: ak.Array([jet[:, i] for jet in jets]) for i, key in enumerate(MOMENTA)}
    return ak.zip(columns)


def chunk_seed(seed: int, label: str, chunk: int) -> int:
    """Pythia's seed for one chunk of one class: fixed by (seed, class, chunk), so a set is the same whatever the
    number of worker processes that made it, and a larger set of the same seed begins with a smaller one."""
    process(label)
    state = np.random.SeedSequence(seed, spawn_key=(list(PROCESSES).index(label), chunk)).generate_state(1)[0]
    return int(state) % 900_000_000
