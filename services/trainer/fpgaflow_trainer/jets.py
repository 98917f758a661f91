"""The hls4ml jet-tagging data set's names: its 16 high-level features (in the public set's column order) and
its 5 classes. The jets themselves come from a file (``fpgaflow_trainer.readers``) or from the simulation
(``fpgaflow_trainer.simulation``: Pythia 8 and FastJet, no detector simulation), which computes the same features
with the same definitions.

The features (of the anti-kT R = 0.8 jet; ``_mmdt`` ones of the jet groomed by the modified mass-drop tagger):
sum z log z; the energy-correlation ratios C1 (beta 0, 1, 2), C2, D2, D2 with alpha 1, M2 and N2 (beta 1, 2);
the groomed mass; the number of constituents. The classes: gluon (g) and light-quark (q) QCD jets, hadronic W
(w) and Z (z) bosons, hadronic top quarks (t).
"""

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
