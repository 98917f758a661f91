"""`fpgaflow estimate FILE.keras`: the estimate of a Keras model file over a grid of precisions and reuse factors,
without hls4ml, TensorFlow or training: the layers come from the file's ``config.json``, the zero weights
and the weights a DSP multiplies from its ``model.weights.h5`` (cast to each precision)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from fpgaflow.errors import StageError
from fpgaflow_converter.calibration import designs
from fpgaflow_converter.calibration.designs import DesignError, Node, nodes_from_keras_config
from fpgaflow_converter.config import SOFTMAX_TABLE_SIZE
from fpgaflow_converter.estimate import estimate
from fpgaflow_converter.layershapes import (
    Settings,
    WeightFacts,
    parse_precision,
    shapes_from_nodes,
    weight_facts,
)

COLUMNS = ("precision", "reuse_factor", "dsp", "lut", "ff", "bram18", "latency_cycles", "latency_ns", "ii_cycles")


def read_keras_file(path: Path) -> tuple[list[Node], list]:
    """The model's nodes and its kernels (2-D or more weight arrays, in file order)."""
    if path.suffix != ".keras":
        raise StageError(f"{path}: expected a Keras v3 .keras file (model.save('model.keras'))")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5") if "model.weights.h5" in archive.namelist() else None
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise StageError(f"{path}: not a readable .keras file ({exc})") from exc
    try:
        nodes = nodes_from_keras_config(config.get("config", config))
    except DesignError as exc:
        raise StageError(f"{path}: {exc}") from exc
    kernels = []
    if weights is not None:
        import h5py

        with h5py.File(io.BytesIO(weights), "r") as f:
            f.visititems(lambda name, item: kernels.append(item[()]) if isinstance(item, h5py.Dataset)
                         and name.endswith("vars/0") and item.ndim >= 2 else None)
    return nodes, kernels


def weights_by_layer(nodes: list[Node], kernels: list, precision: str) -> dict[str, WeightFacts]:
    """Each multiplying layer's WeightFacts at ``precision``, its kernel found by size in file order."""
    width, integer, _ = parse_precision(precision)
    free = list(kernels)
    found = {}
    for name, (size, _, _) in designs.kernels(nodes).items():
        match = next((k for k in free if k.size == size), None)
        if match is not None:
            free.remove(match)
            found[name] = weight_facts(match, width, integer)
    return found


def grid(nodes: list[Node], kernels: list, precisions: list[str], reuse_factors: list[int], *, strategy: str,
         io_type: str, backend: str, clock_period_ns: float, accumulator: str = "exact") -> list[dict]:
    """One row per (precision, reuse factor): the totals and their uncertainty. ``accumulator``: "exact" (what
    fpgaflow's convert stage builds: hls4ml's 'auto' accumulators) or a type (e.g. the precision itself)."""
    rows = []
    for precision in precisions:
        known = weights_by_layer(nodes, kernels, precision)
        for rf in reuse_factors:
            settings = Settings(precision=precision, reuse_factor=rf, strategy=strategy, io_type=io_type,
                                accum=accumulator, softmax_table_size=SOFTMAX_TABLE_SIZE)
            est = estimate(shapes_from_nodes(nodes, settings, known), clock_period_ns, io_type, backend)
            rows.append({"precision": precision, "reuse_factor": rf,
                         **{k: est["total"][k] for k in COLUMNS[2:]}, "uncertainty": est["total"]["uncertainty"],
                         "caveats": est["total"]["caveats"], "model": est["model"]})
    return rows
