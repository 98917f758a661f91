"""Sweep planning: an Experiment's spec to the list of trials, each with its resolved spec."""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fpgaflow.errors import SpecError
from fpgaflow.spec import ExperimentSpec, problems_from, spec_to_dict


@dataclass(frozen=True)
class Trial:
    name: str
    index: int
    parameters: dict[str, Any]
    spec: ExperimentSpec


def set_path(doc: dict, dotted: str, value: Any) -> dict:
    """A copy of ``doc`` with the camelCase field at ``dotted`` (``hls.reuseFactor``) set to ``value``.

    Fields must exist, except below ``hls.layers``, a mapping by layer name, where they are created.
    """
    keys = dotted.split(".")
    out = copy.deepcopy(doc)
    node = out
    for depth, key in enumerate(keys):
        free_form = keys[:2] == ["hls", "layers"] and depth >= 2
        if not isinstance(node, dict) or (key not in node and not free_form):
            raise KeyError(dotted)
        if depth == len(keys) - 1:
            node[key] = value
        else:
            node = node.setdefault(key, {}) if free_form else node[key]
    return out


def _combinations(spec: ExperimentSpec) -> list[dict[str, Any]]:
    sweep = spec.sweep
    if sweep is None:
        return [{}]
    keys = list(sweep.parameters)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.parameters.values())]
    if sweep.mode == "random":
        n = min(sweep.max_trials or len(grid), len(grid))
        return random.Random(sweep.seed).sample(grid, n)
    if sweep.max_trials is not None and len(grid) > sweep.max_trials:
        raise SpecError(
            [("spec.sweep.maxTrials", f"the grid has {len(grid)} trials, more than maxTrials {sweep.max_trials}; "
              "raise maxTrials, drop values, or use mode: random")]
        )
    return grid


def _resolve(base: dict, parameters: dict[str, Any]) -> ExperimentSpec:
    doc = base
    for key, value in parameters.items():
        try:
            doc = set_path(doc, key, value)
        except KeyError:
            raise SpecError([(f"spec.sweep.parameters.{key}", "no such field in the spec")]) from None
    try:
        return ExperimentSpec.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for field, message in problems_from(exc):
            swept = next((k for k in parameters if field.startswith(k) or field.startswith(k.split(".")[0] + ".")), None)
            where = f"spec.sweep.parameters.{swept}" if swept else f"spec.{field}"
            swept_value = parameters[swept] if swept is not None else "?"
            problems.append((where, f"{field} = {swept_value!r}: {message}"))
        raise SpecError(problems) from None


def plan_trials(spec: ExperimentSpec) -> list[Trial]:
    """The trials of an Experiment, in order. A spec without a sweep has one trial, ``t00``."""
    base = spec_to_dict(spec)
    base.pop("sweep")
    combos = _combinations(spec)
    width = max(2, len(str(len(combos) - 1)))
    return [
        Trial(name=f"t{i:0{width}d}", index=i, parameters=params, spec=_resolve(base, params))
        for i, params in enumerate(combos)
    ]
