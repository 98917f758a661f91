"""The rule4ml peer of the estimate benchmark: rule4ml's published predictors on fpgaflow's designs.

Run with the python of the venv that ``benchmarks/rule4ml_venv.sh`` builds (not fpgaflow's)::

    .cache/bench/rule4ml-venv/bin/python benchmarks/rule4ml_peer.py IN.json OUT.json

IN.json is a list of designs ``{"id", "layers", "precision", "reuse_factor", "strategy", "part",
"tool_version"}`` (optionally ``"hls4ml_version"``: 0.8.1 or 1.1.0, default 1.1.0). ``layers`` is the one-line
language of ``fpgaflow_converter/calibration/designs.py``, which is loaded by path (it needs only the standard
library and Keras), so this script imports nothing of fpgaflow.

OUT.json maps each id to ``{"dsp", "lut", "ff", "bram18", "latency_cycles", "ii_cycles", "board",
"board_substituted", "vivado_version", "hls4ml_version", "seconds", "error"}``. A design rule4ml cannot take
(a layer it was not trained on, a bad description) gets an ``error`` string and null numbers.

rule4ml's default predictors (v2 GNNs) scale their inputs over all the designs of one ``predict`` call, so
each design is predicted alone. They know four boards only (pynq-z2, zcu102, alveo-u200, alveo-u250), have
no clock or io_type input (trained at 10 ns, io_parallel), and take Vivado versions 2019.1-2024.2 and hls4ml
0.8.1 / 1.1.0; the nearest accepted value is used and written out. rule4ml's BRAM is counted in BRAM18K
(csynth's unit), written here as ``bram18``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

DESIGNS_PY = (Path(__file__).resolve().parent.parent / "services" / "converter" / "fpgaflow_converter"
              / "calibration" / "designs.py")
DEFAULT_HLS4ML = "1.1.0"
DEFAULT_VIVADO = "2019.2"
# Keras layers rule4ml's predictors were trained on (its sequential layer_type map); activations by name.
KNOWN_LAYERS = {"inputlayer", "dense", "conv1d", "conv2d", "maxpooling1d", "averagepooling1d", "maxpooling2d",
                "averagepooling2d", "batchnormalization", "dropout", "flatten"}
KNOWN_ACTIVATIONS = {"relu", "sigmoid", "tanh", "softmax", "linear"}


def board_of(part: str) -> tuple[str, bool]:
    """rule4ml's board for an FPGA part, and whether it is a stand-in for a family rule4ml does not know
    (any Zynq UltraScale+ counts as zcu102 and any Zynq-7000 as pynq-z2, not flagged)."""
    p = part.lower()
    if p.startswith("xcu250"):
        return "alveo-u250", False
    if p.startswith("xcu200"):
        return "alveo-u200", False
    if p.startswith("xczu"):  # Zynq UltraScale+ MPSoC (xczu9eg, xczu3eg, ...)
        return "zcu102", False
    if p.startswith("xc7z"):  # Zynq-7000
        return "pynq-z2", False
    return "alveo-u250", True


def nearest_version(text: str, accepted: list[str], default: str) -> str:
    """The accepted ``YYYY.N`` nearest to the first ``YYYY.N`` in ``text`` (e.g. "Vivado HLS 2019.2")."""
    m = re.search(r"(\d{4})\.(\d+)", text or "")
    if not m or not accepted:
        return default

    def key(v: str) -> float:
        year, minor = v.split(".")[:2]
        return int(year) + int(minor) / 10

    want = int(m.group(1)) + int(m.group(2)) / 10
    return min(accepted, key=lambda v: (abs(key(v) - want), -key(v)))


def load_designs_module(path: Path = DESIGNS_PY):
    spec = importlib.util.spec_from_file_location("fpgaflow_calibration_designs", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the file runs
    spec.loader.exec_module(module)
    return module


def keras3_input_shapes(model) -> None:
    """Give every layer the ``_build_shapes_dict`` that rule4ml reads its input shape from under Keras 3.
    Keras >= 3.x marks layers without weights (pooling, flatten) built at construction and leaves it None, so
    rule4ml's parser stops on them ("Could not get the input shape for layer max_pooling2d")."""
    for layer in model.layers:
        if getattr(layer, "_build_shapes_dict", None) is None and layer.__class__.__name__ != "InputLayer":
            layer._build_shapes_dict = {"input_shape": tuple(layer.input.shape)}


def unknown_layers(model) -> list[str]:
    """The layers of ``model`` that rule4ml's predictors do not know (rule4ml would map them to garbage)."""
    bad = []
    for layer in model.layers:
        kind = layer.__class__.__name__.lower()
        if kind == "activation":
            act = layer.get_config().get("activation")
            act = act if isinstance(act, str) else str(getattr(act, "__name__", act))
            if act.lower() not in KNOWN_ACTIVATIONS:
                bad.append(f"{layer.name} (activation {act})")
        elif kind not in KNOWN_LAYERS:
            bad.append(f"{layer.name} ({layer.__class__.__name__})")
        else:
            act = layer.get_config().get("activation")
            if isinstance(act, str) and act.lower() not in KNOWN_ACTIVATIONS:
                bad.append(f"{layer.name} (fused activation {act})")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp", type=Path, help="designs, a JSON list")
    ap.add_argument("out", type=Path, help="predictions, a JSON object by design id")
    ap.add_argument("--designs-py", type=Path, default=DESIGNS_PY, help="the file with keras_model(layers, name)")
    args = ap.parse_args(argv)

    designs = json.loads(args.inp.read_text())
    if not isinstance(designs, list):
        raise SystemExit(f"{args.inp}: expected a JSON list of designs")

    t0 = time.perf_counter()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.load(weights_only=False) inside rule4ml
    # torch_geometric before tensorflow: the other order can abort the process (an LLVM option clash)
    import torch_geometric  # noqa: F401, I001
    import tensorflow  # noqa: F401
    import keras
    from rule4ml.models.wrappers import MultiModelWrapper

    designs_py = load_designs_module(args.designs_py)
    wrapper = MultiModelWrapper()
    wrapper.load_default_models()
    maps = next(iter(wrapper._models.values())).global_categorical_maps
    vivado_ok = sorted(maps.get("vivado_version", {}))
    hls4ml_ok = sorted(maps.get("hls4ml_version", {}))
    print(f"rule4ml peer: predictors loaded in {time.perf_counter() - t0:.1f} s; vivado {vivado_ok[0]}..{vivado_ok[-1]},"
          f" hls4ml {', '.join(hls4ml_ok)}; {len(designs)} designs", flush=True)

    out: dict[str, dict] = {}
    for n, d in enumerate(designs, start=1):
        t1 = time.perf_counter()
        did = str(d.get("id", n))
        board, substituted = board_of(str(d.get("part", "")))
        vivado = nearest_version(str(d.get("tool_version", "")), vivado_ok, DEFAULT_VIVADO)
        hls4ml = str(d.get("hls4ml_version") or DEFAULT_HLS4ML)
        if hls4ml not in hls4ml_ok:  # e.g. 1.3.0 -> 1.1.0, 0.7.1 -> 0.8.1
            hls4ml = "0.8.1" if hls4ml.startswith("0.") else DEFAULT_HLS4ML
        row: dict[str, Any] = {"dsp": None, "lut": None, "ff": None, "bram18": None, "latency_cycles": None, "ii_cycles": None,
               "board": board, "board_substituted": substituted, "vivado_version": vivado, "hls4ml_version": hls4ml,
               "seconds": None, "error": None}
        try:
            keras.utils.clear_session()
            model = designs_py.keras_model(d["layers"], re.sub(r"\W", "_", did) or "design")
            if not model.built or getattr(model, "_build_shapes_dict", None) is None:
                model.build((None, *model.inputs[0].shape[1:]))
            keras3_input_shapes(model)
            bad = unknown_layers(model)
            if bad:
                raise ValueError("rule4ml was not trained on: " + ", ".join(bad))
            strategy = str(d.get("strategy", "Latency")).lower()
            hls_config = {"board": board, "model": {"strategy": strategy, "precision": str(d["precision"]),
                                                    "reuse_factor": int(d.get("reuse_factor", 1))}}
            df = wrapper.predict(model, hls_configs=hls_config, hls4ml_versions=hls4ml, vivado_versions=vivado)
            if len(df) != 1:
                raise RuntimeError(f"rule4ml returned {len(df)} rows, expected 1")
            r = df.iloc[0]
            row.update(dsp=float(r["DSP"]), lut=float(r["LUT"]), ff=float(r["FF"]), bram18=float(r["BRAM"]),
                       latency_cycles=float(r["CYCLES"]), ii_cycles=float(r["INTERVAL"]))
        except Exception as e:  # a design rule4ml cannot take is a result, not a crash
            row["error"] = f"{type(e).__name__}: {e}"
        row["seconds"] = round(time.perf_counter() - t1, 3)
        out[did] = row
        what = (f"error {row['error']}" if row["error"] else
                f"dsp {row['dsp']:g} lut {row['lut']:g} ff {row['ff']:g} bram18 {row['bram18']:g} "
                f"latency {row['latency_cycles']:g} ii {row['ii_cycles']:g}")
        print(f"[{n}/{len(designs)}] {did}: {board}{' (substituted)' if substituted else ''} vivado {vivado} "
              f"hls4ml {hls4ml}: {what} ({row['seconds']:.2f} s)", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    failed = sum(1 for r in out.values() if r["error"])
    print(f"rule4ml peer: wrote {args.out}: {len(out) - failed} predicted, {failed} errors, "
          f"{time.perf_counter() - t0:.1f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
