"""A simulated data set, made once and kept: a folder under the cache root named by a hash of everything that
shapes the set (the recipe: kind, classes and counts, pT window, seed, image settings, and the versions of
Pythia, FastJet and of this recipe). Every later run and every trial of a sweep with the same recipe reads it;
a changed parameter names another folder. On a cluster the cache root is on the artifacts volume, so a set is
made once per recipe, not once per trial.

    <root>/<kind>-<hash>/recipe.json   the recipe, as hashed
    <root>/<kind>-<hash>/data.npz      the arrays
    <root>/<kind>-<hash>/made.json     how long it took, jets per second, when; written last

A set counts only once ``made.json`` exists (it is written after the arrays, and the folder is renamed into
place whole), and makers of the same recipe take turns (a lock file), so two trials never make it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fpgaflow.errors import FpgaflowError

RECIPE_VERSION = 1  # raise when the simulation or the feature code changes what a recipe makes
MARGIN = 1.5  # free disk asked beyond a set's estimated size: its temporary copy, the estimate's error


class CacheFull(FpgaflowError):
    reason = "DatasetCacheFull"


@dataclass(frozen=True)
class Cached:
    folder: Path
    arrays: dict[str, np.ndarray]
    made: dict[str, Any]
    reused: bool


def recipe_key(recipe: Mapping[str, Any]) -> str:
    """The folder name of a recipe: its kind and a hash of its canonical JSON."""
    canonical = json.dumps({**recipe, "recipeVersion": RECIPE_VERSION}, sort_keys=True, separators=(",", ":"))
    return f"{recipe['kind']}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def check_room(root: Path, needed_bytes: int, margin: float = MARGIN) -> None:
    """Refuse, before anything is made, a set the cache's disk cannot hold (with a margin for the temporary copy)."""
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < needed_bytes * margin:
        raise CacheFull(f"the data set needs about {needed_bytes / 1e6:.0f} MB (with room for writing it, "
                        f"{needed_bytes * margin / 1e6:.0f} MB) but {root} has {free / 1e6:.0f} MB free: "
                        "free some space, or choose a smaller set or another cache folder")


def is_cached(root: Path, recipe: Mapping[str, Any]) -> bool:
    return (root / recipe_key(recipe) / "made.json").exists()


def ensure(root: Path, recipe: Mapping[str, Any], make: Callable[[], dict[str, np.ndarray]],
           needed_bytes: int = 0) -> tuple[Path, bool]:
    """The folder of ``recipe``'s set in the cache, made by ``make`` (then kept) when it is not there yet; and
    whether this call made it."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / recipe_key(recipe)
    with (root / f".{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another maker of the same recipe finishes first; this one then reads
        if (folder / "made.json").exists():
            return folder, False
        if needed_bytes:
            check_room(root, needed_bytes)
        for left in [folder, *root.glob(f".{folder.name}.partial-*")]:  # of a maker that died (the lock is ours)
            shutil.rmtree(left, ignore_errors=True)
        partial = root / f".{folder.name}.partial-{os.getpid()}"
        partial.mkdir()
        started = time.monotonic()
        arrays = make()
        (partial / "recipe.json").write_text(json.dumps(dict(recipe), indent=1, sort_keys=True))
        np.savez(partial / "data.npz", **arrays)
        seconds = time.monotonic() - started
        (partial / "made.json").write_text(json.dumps({"seconds": round(seconds, 2), "at": time.time()}))
        partial.rename(folder)
    return folder, True


def load_or_make(root: Path, recipe: Mapping[str, Any], make: Callable[[], dict[str, np.ndarray]],
                 needed_bytes: int = 0) -> Cached:
    """The set of ``recipe`` from the cache, or made by ``make`` (then kept) when it is not there yet."""
    folder, made = ensure(root, recipe, make, needed_bytes)
    return read(folder, reused=not made)


def read(folder: Path, names: tuple[str, ...] | None = None, reused: bool = True) -> Cached:
    """A cached set's arrays (those ``names``, or all)."""
    with np.load(folder / "data.npz", allow_pickle=False) as data:
        arrays = {name: data[name] for name in (names or data.files)}
    return Cached(folder, arrays, json.loads((folder / "made.json").read_text()), reused)
