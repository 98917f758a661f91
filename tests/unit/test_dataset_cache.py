"""The simulated data sets' cache (fpgaflow_trainer.simulation.cache): made once per recipe and reused, another
recipe makes another set, makers of one recipe take turns, and a set too big for the disk is refused first."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fpgaflow_trainer.simulation.cache import CacheFull, load_or_make, recipe_key

RECIPE = {"kind": "jets", "counts": {"w": 10, "t": 10}, "seed": 3, "ptWindow": [800, 1200], "pythia": "8.317.2"}


class Maker:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "y": np.array(["w", "t", "w"])}


def test_a_set_is_made_once_and_reused(tmp_path):
    make = Maker()
    first = load_or_make(tmp_path, RECIPE, make)
    again = load_or_make(tmp_path, dict(RECIPE), make)
    assert make.calls == 1 and (first.reused, again.reused) == (False, True)
    assert first.folder == again.folder and again.arrays["y"].tolist() == ["w", "t", "w"]
    assert (first.folder / "recipe.json").exists() and again.made["seconds"] >= 0


@pytest.mark.parametrize("change", [{"seed": 4}, {"counts": {"w": 10, "t": 11}}, {"ptWindow": [900, 1200]},
                                    {"pythia": "8.318"}, {"kind": "jet-images"}])
def test_any_changed_parameter_names_another_set(tmp_path, change):
    assert recipe_key({**RECIPE, **change}) != recipe_key(RECIPE)
    make = Maker()
    load_or_make(tmp_path, RECIPE, make)
    load_or_make(tmp_path, {**RECIPE, **change}, make)
    assert make.calls == 2


def test_the_key_does_not_depend_on_the_order_of_the_recipe():
    assert recipe_key(dict(reversed(list(RECIPE.items())))) == recipe_key(RECIPE)


def test_two_makers_of_one_recipe_take_turns(tmp_path):
    make = Maker()
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_or_make(tmp_path, RECIPE, make))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert make.calls == 1 and sorted(r.reused for r in results) == [False, True, True]


def test_a_set_whose_maker_died_is_made_again(tmp_path):
    def dies():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_or_make(tmp_path, RECIPE, dies)
    make = Maker()
    assert not load_or_make(tmp_path, RECIPE, make).reused and make.calls == 1
    assert not list(tmp_path.glob(".*partial*")), "what the dead maker left is gone"


def test_a_set_too_big_for_the_disk_is_refused_before_it_is_made(tmp_path):
    make = Maker()
    with pytest.raises(CacheFull, match=r"needs about .* MB .* free: free some space"):
        load_or_make(tmp_path, RECIPE, make, needed_bytes=10**18)
    assert make.calls == 0
