"""`fpgaflow data check`: is a simulated jet set what the public hls4ml jet data set looks like?

The public set (Duarte et al., JINST 13 (2018) P07027; Pierini et al., Zenodo 3602260) shows, per class:
groomed-mass peaks near the W, Z and top masses and a falling mass for light jets; more constituents in gluon
jets than in quark jets; lower N2 and D2 for the two-prong W and Z jets than for one-prong QCD jets. These are
checked on the medians (``shape_checks``), every feature is plotted per class beside those marks
(``plot_features``), and the hls4ml tutorial's MLP (Dense 64-32-32-5, ReLU) trained on the set is compared with
the tutorial's published accuracy on the real set, about 0.76 (``tutorial_accuracy``). The simulation has no
detector: its jets are sharper than the public set's, so its accuracy may be higher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpgaflow_trainer.jets import CLASSES, FEATURES

PUBLISHED_ACCURACY = 0.76  # the hls4ml tutorial's float MLP on the public set (part 1, 10 epochs)
MASS_GEV = {"w": 80.4, "z": 91.2, "t": 172.5}
MASS_WINDOW_GEV = {"w": (65.0, 95.0), "z": (75.0, 105.0), "t": (145.0, 195.0)}


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    measured: str
    passed: bool

    def row(self) -> dict:
        return {"check": self.name, "expected": self.expected, "measured": self.measured, "passed": self.passed}


def medians(features: np.ndarray, labels: np.ndarray, feature: str) -> dict[str, float]:
    column = features[:, FEATURES.index(feature)]
    return {label: float(np.median(column[labels == k])) for k, label in enumerate(CLASSES) if (labels == k).any()}


def shape_checks(features: np.ndarray, labels: np.ndarray) -> list[Check]:
    """The public set's known shapes, checked on the per-class medians of a (n, 16) jets set."""
    mass = medians(features, labels, "j_mass_mmdt")
    found = []
    for label, (low, high) in MASS_WINDOW_GEV.items():
        found.append(Check(f"groomed mass of {label} jets", f"a peak near {MASS_GEV[label]} GeV (median {low:g}-{high:g})",
                           f"median {mass[label]:.1f} GeV", low <= mass[label] <= high))
    found.append(Check("groomed mass of q and g jets", "no peak: most of them lighter than the W jets (medians below w's)",
                       f"medians q {mass['q']:.1f}, g {mass['g']:.1f} GeV", max(mass["q"], mass["g"]) < mass["w"]))
    n = medians(features, labels, "j_multiplicity")
    found.append(Check("multiplicity", "more constituents in g jets than in q jets",
                       f"medians g {n['g']:.0f}, q {n['q']:.0f}", n["g"] > n["q"]))
    for feature in ("j_n2_b1_mmdt", "j_d2_b1_mmdt"):
        m = medians(features, labels, feature)
        two, one = max(m["w"], m["z"]), min(m["q"], m["g"])
        found.append(Check(feature[2:4].upper() + " (beta 1)", "lower for two-prong w, z than for one-prong q, g",
                           f"medians w {m['w']:.3g}, z {m['z']:.3g}; q {m['q']:.3g}, g {m['g']:.3g}", two < one))
    return found


def plot_features(features: np.ndarray, labels: np.ndarray, title: str, path) -> None:
    """Each feature's distribution per class (4 x 4 panels, densities), with the public set's marks: the W, Z
    and top masses on the groomed mass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 4, figsize=(16, 13))
    for ax, (i, name) in zip(axes.flat, enumerate(FEATURES), strict=True):
        column = features[:, i]
        low, high = np.percentile(column, [0.5, 99.5])
        bins = np.arange(low - 0.5, high + 1.5) if name == "j_multiplicity" else np.linspace(low, high, 50)
        for k, label in enumerate(CLASSES):
            ax.hist(column[labels == k], bins=bins, density=True, histtype="step", linewidth=1.4, label=label)
        if name == "j_mass_mmdt":
            for label, mass in MASS_GEV.items():
                ax.axvline(mass, color="grey", linestyle=":", linewidth=1)
                ax.text(mass, ax.get_ylim()[1] * 0.95, f" {label.upper()}", color="grey", fontsize=8, va="top")
            ax.set_xlabel("GeV")
        ax.set_title(name, fontsize=10)
        ax.set_yticks([])
    axes.flat[0].legend(title="class", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def tutorial_accuracy(data, epochs: int = 30, seed: int = 0) -> float:
    """Test accuracy of the hls4ml tutorial's float MLP trained on ``data`` (a jets
    :class:`fpgaflow_trainer.datasets.Dataset`), standard-scaled: as its part 1 (64-32-32-5, ReLU, L1 1e-4,
    30 epochs, a quarter of the training set validating), but with batches of 256 rather than 1024 and Adam at
    1e-3 rather than 1e-4, so that a set tens of times smaller than the public one gets enough steps."""
    import keras

    from fpgaflow.preprocess import Scaler
    from fpgaflow.spec import ModelSpec
    from fpgaflow_trainer.model import build_model

    scaler = Scaler.fit(data.x_train, data.features)
    keras.utils.set_random_seed(seed)
    model = build_model(ModelSpec(type="mlp", layers=[64, 32, 32], l1=1e-4), data.shape, len(data.classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(scaler.apply(data.x_train), data.y_train, epochs=epochs, batch_size=256, validation_split=0.25, verbose=0)
    predicted = model.predict(scaler.apply(data.x_test), verbose=0).argmax(axis=1)
    return float((predicted == data.y_test).mean())


def check_set(data, out, epochs: int = 30) -> dict:
    """Check a simulated jets set: the shapes, the plot (``out``/features.png) and the tutorial MLP's accuracy;
    the result is also written to ``out``/check.json."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    features = np.concatenate([data.x_train, data.x_test])
    labels = np.concatenate([data.y_train, data.y_test])
    sim = data.simulation or {}
    title = (f"{len(labels):,} jets {sim.get('description', data.describe()['source'])}"
             + (f", pT {sim['ptWindowGeV'][0]:g}-{sim['ptWindowGeV'][1]:g} GeV, seed {sim['seed']}" if sim else ""))
    plot_features(features, labels, title, out / "features.png")
    checks = [c.row() for c in shape_checks(features, labels)]
    accuracy = tutorial_accuracy(data, epochs)
    result = {"data": data.describe(), "checks": checks, "plot": str(out / "features.png"),
              "mlp": {"accuracy": round(accuracy, 4), "published": PUBLISHED_ACCURACY, "epochs": epochs,
                      "test": len(data.y_test)}}
    (out / "check.json").write_text(json.dumps(result, indent=1))
    return result
