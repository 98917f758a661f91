"""The synthetic jet fixture (tests/synthetic_jets.py) that unit tests use for quick arrays: learnable, balanced, reproducible."""

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from fpgaflow_trainer.jets import CLASSES, FEATURES
from tests.synthetic_jets import synthetic_jets

N = 20_000


@pytest.fixture(scope="module")
def jets():
    return synthetic_jets(N, seed=0)


def _col(name: str) -> int:
    return FEATURES.index(name)


def test_feature_and_class_names():
    assert FEATURES == (
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
    assert CLASSES == ("g", "q", "w", "z", "t")


def test_same_seed_is_deterministic():
    X1, y1 = synthetic_jets(3_000, seed=7)
    X2, y2 = synthetic_jets(3_000, seed=7)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)


def test_other_seed_differs():
    X1, y1 = synthetic_jets(3_000, seed=7)
    X2, y2 = synthetic_jets(3_000, seed=8)
    assert not np.array_equal(X1, X2)
    assert not np.array_equal(y1, y2)


@pytest.mark.parametrize("n", [0, 1, 17])
def test_shapes_and_dtypes(n):
    X, y = synthetic_jets(n, seed=1)
    assert X.shape == (n, len(FEATURES))
    assert y.shape == (n,)
    assert X.dtype == np.float32
    assert y.dtype == np.int64


def test_classes_present_and_balanced(jets):
    _, y = jets
    assert set(np.unique(y)) == set(range(len(CLASSES)))
    fractions = np.bincount(y, minlength=len(CLASSES)) / len(y)
    assert np.all(np.abs(fractions - 1 / len(CLASSES)) < 0.02)


def test_values_finite_with_physical_signs(jets):
    X, _ = jets
    assert np.isfinite(X).all()
    assert (X[:, _col("j_zlogz")] < 0).all()
    others = [i for i, f in enumerate(FEATURES) if f != "j_zlogz"]
    assert (X[:, others] > 0).all()


def test_resonance_mass_ordering(jets):
    X, y = jets
    mass = X[:, _col("j_mass_mmdt")]
    w, z, t = (np.median(mass[y == CLASSES.index(c)]) for c in ("w", "z", "t"))
    assert w < z < t
    assert 70 < w < 90 and 80 < z < 100 and 160 < t < 200


def test_gluons_have_more_constituents_than_quarks(jets):
    X, y = jets
    mult = X[:, _col("j_multiplicity")]
    assert np.median(mult[y == CLASSES.index("g")]) > np.median(mult[y == CLASSES.index("q")])


def test_no_single_feature_separates_the_classes(jets):
    X, y = jets
    half = len(y) // 2
    for j, name in enumerate(FEATURES):
        tree = DecisionTreeClassifier(max_depth=3, random_state=0)
        tree.fit(X[:half, j : j + 1], y[:half])
        acc = tree.score(X[half:, j : j + 1], y[half:])
        assert acc < 0.6, f"{name} alone reaches accuracy {acc:.3f}"
