"""Exports of the convert stage: the hls4ml project with a vendor build script, and a binarized model's
packed weights and thresholds in the BNN-PYNQ / FINN layout. The byte layouts are in docs/exports.md."""

from __future__ import annotations

import json
import math
import stat
import tarfile
from pathlib import Path

import numpy as np

from fpgaflow.errors import StageError

# ------------------------------------------------------------------------------------ vendor build script

BUILD_SCRIPT = "build.sh"
# The options of hls4ml 1.3's build_prj.tcl (its `array set opt`; Vitis reads them from build_opt.tcl).
TCL_OPTIONS = ("reset", "csim", "synth", "cosim", "validation", "export", "vsynth", "fifo_opt")
TOOLS = {"Vitis": "vitis_hls", "Vivado": "vivado_hls"}

_SCRIPT = r"""#!/bin/sh
# Synthesizes this hls4ml project ({project}, backend {backend}, part {part}, clock {clock} ns) with
# {tool}, running hls4ml's own build_prj.tcl in this folder: the firmware and weights here are exactly
# the ones fpgaflow emulated. Written by fpgaflow.
#
# usage: ./build.sh [--csim] [--no-synth] [--cosim] [--export] [--vsynth] [--reset]
#   (default)   C synthesis only
#   --csim      C simulation first (the testbench reads tb_data/)
#   --no-synth  skip C synthesis
#   --cosim     C/RTL co-simulation after synthesis (with --csim, also compares the two outputs)
#   --export    export the IP (ip_catalog) after synthesis
#   --vsynth    Vivado logic synthesis of the generated RTL (needs vivado on PATH)
#   --reset     start the {project}_prj HLS project afresh
# Reports: {project}_prj/solution1/syn/report/{project}_csynth.rpt (and .xml); co-simulation:
# {project}_prj/solution1/sim/report/; exported IP: {project}_prj/solution1/impl/.
set -eu

usage() {{
    echo "usage: ./build.sh [--csim] [--no-synth] [--cosim] [--export] [--vsynth] [--reset]"
    echo "  default: C synthesis only; the options are described at the top of build.sh"
}}

reset=0 csim=0 synth=1 cosim=0 export=0 vsynth=0 fifo_opt=0
while [ $# -gt 0 ]; do
    case "$1" in
        --csim) csim=1 ;;
        --no-synth) synth=0 ;;
        --cosim) cosim=1 ;;
        --export) export=1 ;;
        --vsynth) vsynth=1 ;;
        --reset) reset=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
validation=0
if [ "$csim" = 1 ] && [ "$cosim" = 1 ]; then validation=1; fi

case "$0" in */*) cd "${{0%/*}}" ;; esac
if [ ! -f build_prj.tcl ]; then
    echo "build.sh: no build_prj.tcl in $(pwd); run this script inside the exported hls4ml project" >&2
    exit 2
fi

backend={backend}
if [ "$backend" = Vitis ]; then
    if command -v vitis_hls >/dev/null 2>&1; then
        tool="vitis_hls -f build_prj.tcl"
    elif command -v vitis-run >/dev/null 2>&1; then
        tool="vitis-run --mode hls --tcl build_prj.tcl"
    else
        echo "build.sh: vitis_hls is not on PATH (nor vitis-run, its Vitis 2024.2 successor); install AMD Vitis" \
             "HLS and source its settings64.sh, then run this script again" >&2
        exit 2
    fi
    # hls4ml's Vitis build_prj.tcl reads its options from build_opt.tcl.
    cat > build_opt.tcl <<EOF
array set opt {{
    reset      $reset
    csim       $csim
    synth      $synth
    cosim      $cosim
    validation $validation
    export     $export
    vsynth     $vsynth
    fifo_opt   $fifo_opt
}}
EOF
    echo "build.sh: $tool (csim=$csim synth=$synth cosim=$cosim export=$export vsynth=$vsynth)"
    $tool
else
    if ! command -v vivado_hls >/dev/null 2>&1; then
        echo "build.sh: vivado_hls is not on PATH; install Xilinx Vivado HLS (2020.1 or earlier) and source its" \
             "settings64.sh, then run this script again" >&2
        exit 2
    fi
    opts="reset=$reset csim=$csim synth=$synth cosim=$cosim validation=$validation export=$export vsynth=$vsynth fifo_opt=$fifo_opt"
    echo "build.sh: vivado_hls -f build_prj.tcl \"$opts\""
    vivado_hls -f build_prj.tcl "$opts"
fi
if [ "$synth" = 1 ]; then
    echo "build.sh: synthesis report: $(pwd)/{project}_prj/solution1/syn/report/{project}_csynth.rpt"
fi
"""


def build_script(project_name: str, part: str, clock_period: float, backend: str) -> str:
    """The text of build.sh for an hls4ml project of ``backend`` (Vitis or Vivado)."""
    if backend not in TOOLS:
        raise StageError(f"no vendor build script for backend {backend!r}; hls4ml projects of {', '.join(TOOLS)} have one")
    return _SCRIPT.format(project=project_name, backend=backend, part=part, clock=f"{clock_period:g}", tool=TOOLS[backend])


def write_build_script(project_dir: Path, project_name: str, part: str, clock_period: float, backend: str) -> Path:
    """Writes the executable build.sh into the hls4ml project folder (which must hold build_prj.tcl)."""
    project_dir = Path(project_dir)
    if not (project_dir / "build_prj.tcl").is_file():
        raise StageError(f"{project_dir} has no build_prj.tcl: not an hls4ml project written by the Vitis or Vivado backend")
    path = project_dir / BUILD_SCRIPT
    path.write_text(build_script(project_name, part, clock_period, backend))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def pack_project(project_dir: Path, tarball: Path, arcname: str) -> Path:
    """The project folder as a gzipped tarball under ``arcname``, file modes kept (build.sh stays executable)."""
    tarball = Path(tarball)
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(Path(project_dir), arcname=arcname)
    return tarball


# ------------------------------------------------------------------------------------- BNN-PYNQ export

MANIFEST = "bnn.json"
NEVER = 2**62  # a fixed-point threshold no sum reaches (a neuron whose batch norm is never >= 0)


def _bits_to_words(bits: np.ndarray, simd: int) -> np.ndarray:
    """Rows of 0/1 (length a multiple of simd) as uint64 words, simd bits each, element j of a group at bit j."""
    groups = bits.reshape(len(bits), -1, simd).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(simd, dtype=np.uint64))
    return (groups * weights).sum(axis=-1, dtype=np.uint64).reshape(-1)


def _words_to_bits(words: np.ndarray, simd: int, rows: int) -> np.ndarray:
    shifts = np.arange(simd, dtype=np.uint64)
    bits = (words[:, None] >> shifts) & np.uint64(1)
    return bits.reshape(rows, -1).astype(np.uint8)


def _pad_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _binary_layers(model) -> tuple[list[tuple], object]:
    """[(BinaryDense, BatchNormalization), ...] of the hidden layers and the output BinaryDense of a
    ``binary`` model (services/trainer/model.py's build_binary)."""
    import keras

    from fpgaflow.keras_model import BinaryDense, SignActivation

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    hidden, i = [], 0
    while i + 2 < len(layers) and isinstance(layers[i], BinaryDense):
        dense, bn, sign = layers[i:i + 3]
        if not (isinstance(bn, keras.layers.BatchNormalization) and isinstance(sign, SignActivation)) or dense.use_bias:
            break
        hidden.append((dense, bn))
        i += 3
    rest = layers[i:]
    if not hidden or len(rest) != 2 or not isinstance(rest[0], BinaryDense):
        names = ", ".join(f"{lay.name} ({type(lay).__name__})" for lay in layers)
        raise StageError(f"the BNN export needs a binary model (BinaryDense, BatchNormalization, SignActivation per "
                         f"hidden layer, then an output BinaryDense and softmax); this model has {names}")
    return hidden, rest[0]


def _fires(bn, x: np.ndarray) -> np.ndarray:
    """Whether sign(bn(x)) is +1, evaluated by the Keras layer itself (x: rows of per-neuron inputs)."""
    import keras

    return keras.ops.convert_to_numpy(bn(x.astype(np.float32), training=False)) >= 0


def _affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """bn(x) = x * scale + shift (float64), to locate each neuron's threshold."""
    gamma, beta, mean, var = (np.asarray(w, dtype=np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def popcount_thresholds(bn, n_in: int, flips: np.ndarray) -> np.ndarray:
    """Per neuron the least popcount P (agreements of n_in +-1 inputs with the neuron's stored, flipped weights)
    at which the sign after ``bn`` is +1: the dot product with the stored weights is 2P - n_in, the model's own
    dot product is that times -1 where flipped. n_in + 1 when it never is. Every P in 0..n_in is tried with
    the Keras layer, so the threshold is exact; a neuron whose output is not monotone in P is an error."""
    counts = np.arange(n_in + 1)
    signs = np.where(flips, -1, 1)
    on = _fires(bn, np.outer(2 * counts - n_in, np.ones(len(flips))) * signs)  # (n_in + 1, n_out)
    first = np.where(on.any(axis=0), on.argmax(axis=0), n_in + 1)
    monotone = on == (counts[:, None] >= first[None, :])
    if not monotone.all():
        bad = int(np.flatnonzero(~monotone.all(axis=0))[0])
        raise StageError(f"{bn.name}: neuron {bad}'s sign is not a threshold on its popcount; cannot export it")
    return first.astype(np.int64)


def fixed_point_thresholds(bn, flips: np.ndarray, frac_bits: int, bound: int) -> np.ndarray:
    """Per neuron the least integer T (units of 2^-frac_bits) such that a stored-weight sum S >= T means the sign
    after ``bn`` is +1 (the model's sum is S, negated where flipped); located with the float64 batch norm and
    settled with the Keras layer on the neighbouring values. ``bound`` is the largest |S| the inputs reach."""
    scale, shift = _affine(bn)
    signs = np.where(flips, -1, 1)
    step = 2.0 ** -frac_bits
    thresholds = np.empty(len(flips), dtype=np.int64)
    live = scale != 0
    thresholds[~live] = np.where(shift[~live] >= 0, -NEVER, NEVER)
    with np.errstate(divide="ignore", invalid="ignore"):
        guess = np.ceil(np.where(live, signs * (-shift / scale) / step, 0.0))
    guess = np.clip(guess, -bound - 1, bound + 1).astype(np.int64)
    window = np.arange(-8, 9)
    units = guess[None, :] + window[:, None]  # (17, n_out)
    on = _fires(bn, units * step * signs)
    for n in np.flatnonzero(live):
        column = on[:, n]
        if column.all() and guess[n] <= -bound:
            thresholds[n] = -NEVER
        elif not column.any() and guess[n] >= bound:
            thresholds[n] = NEVER
        elif column[-1] and not column[0] and (column == (np.arange(len(window)) >= column.argmax())).all():
            thresholds[n] = units[column.argmax(), n]
        else:
            raise StageError(f"{bn.name}: no single threshold for neuron {n} near {guess[n]} * 2^-{frac_bits}")
    return thresholds


def quantize_input(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """The first layer's inputs as the hardware takes them: integers in units of 2^-frac_bits (round half to even)."""
    return np.round(np.asarray(x, dtype=np.float64) * 2.0**frac_bits).astype(np.int64)


def _write_layer(folder: Path, index: int, stored: np.ndarray, extra: np.ndarray, suffix: str, pe: int,
                 simd: int, pad_value: int) -> dict:
    """stored: (n_out, n_in) 0/1 rows; extra: one int64 per neuron. Pads rows to a multiple of pe (weights 1,
    ``pad_value``) and columns to a multiple of simd (weights 1), deals neuron r to PE r % pe, writes
    '{index}-{pe}-weights.bin' and '{index}-{pe}-{suffix}.bin' per PE."""
    n_out, n_in = stored.shape
    rows, cols = _pad_to(n_out, pe), _pad_to(n_in, simd)
    bits = np.ones((rows, cols), dtype=np.uint8)
    bits[:n_out, :n_in] = stored
    values = np.full(rows, pad_value, dtype=np.int64)
    values[:n_out] = extra
    for p in range(pe):
        _bits_to_words(bits[p::pe], simd).astype("<u8").tofile(folder / f"{index}-{p}-weights.bin")
        values[p::pe].astype("<i8").tofile(folder / f"{index}-{p}-{suffix}.bin")
    return {"n_in": n_in, "n_out": n_out, "padded_in": cols, "padded_out": rows, "pe": pe, "simd": simd,
            "words_per_neuron": cols // simd, "values": suffix}


def export_bnn(model, folder: Path, *, pe: int = 1, simd: int = 64, input_frac_bits: int = 8,
               bias_frac_bits: int = 16, input_bound: float | None = None) -> dict:
    """Writes a ``binary`` model's weights and thresholds in the BNN-PYNQ layout (docs/exports.md) into
    ``folder`` with the manifest bnn.json, which it returns.

    Layer 0 takes fixed-point inputs (``quantize_input(x, input_frac_bits)``) and compares the signed sum with
    an int64 threshold in units of 2^-input_frac_bits; later hidden layers compare a popcount with an int64
    threshold; the output layer has an int64 bias in units of 2^-bias_frac_bits instead of thresholds.
    ``input_bound``: the largest |input| expected (default 2^(23 - input_frac_bits) / n_in, which keeps every
    sum exact in float32)."""
    if not 1 <= simd <= 64 or pe < 1:
        raise StageError(f"simd must be 1 to 64 bits (one uint64 word) and pe at least 1, not simd={simd}, pe={pe}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*-*-*.bin"):
        old.unlink()
    hidden, output = _binary_layers(model)
    layers = []
    for index, (dense, bn) in enumerate(hidden):
        kernel = dense.binary_kernel()  # (n_in, n_out) of +-1
        n_in, n_out = kernel.shape
        flips = _affine(bn)[0] < 0
        stored = ((kernel * np.where(flips, -1, 1)).T > 0).astype(np.uint8)
        if index == 0:
            bound = input_bound if input_bound is not None else 2.0 ** (23 - input_frac_bits) / n_in
            limit = int(math.ceil(bound * 2**input_frac_bits)) * n_in
            thresholds = fixed_point_thresholds(bn, flips, input_frac_bits, limit)
            entry = _write_layer(folder, index, stored, thresholds, "thres", pe, simd, NEVER)
            entry.update(kind="input", threshold="fixed_point_sum", frac_bits=input_frac_bits)
        else:
            thresholds = popcount_thresholds(bn, n_in, flips)
            entry = _write_layer(folder, index, stored, thresholds, "thres", pe, simd, NEVER)
            entry.update(kind="hidden", threshold="popcount")
        entry.update(name=dense.name, batchnorm=bn.name, flips=[int(f) for f in flips])
        layers.append(entry)
    kernel = output.binary_kernel()
    bias = output.get_weights()[1] if output.use_bias else np.zeros(kernel.shape[1])
    scaled = np.round(np.asarray(bias, dtype=np.float64) * 2.0**bias_frac_bits).astype(np.int64)
    entry = _write_layer(folder, len(hidden), (kernel.T > 0).astype(np.uint8), scaled, "bias", pe, simd, -NEVER)
    entry.update(kind="output", threshold=None, frac_bits=bias_frac_bits, name=output.name,
                 flips=[0] * kernel.shape[1])
    layers.append(entry)
    manifest = {"format": "BNN-PYNQ", "layout_doc": "docs/exports.md", "endianness": "little",
                "input_frac_bits": input_frac_bits, "layers": layers}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_bnn(folder: Path) -> dict:
    """An exported BNN read back: the manifest, and per layer ``weights`` (n_in, n_out) int8 +-1 as the model's
    kernel, ``stored`` (n_out, n_in) 0/1 bits as the files hold them (flipped rows), ``thresholds`` (int64,
    hidden layers) or ``bias`` (int64, output layer), and ``flips`` (bool per neuron)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise StageError(f"{folder} has no {MANIFEST}: not a BNN export")
    manifest = json.loads((folder / MANIFEST).read_text())
    layers = []
    for index, entry in enumerate(manifest["layers"]):
        pe, simd = entry["pe"], entry["simd"]
        rows, cols = entry["padded_out"], entry["padded_in"]
        bits = np.empty((rows, cols), dtype=np.uint8)
        values = np.empty(rows, dtype=np.int64)
        for p in range(pe):
            words = np.fromfile(folder / f"{index}-{p}-weights.bin", dtype="<u8")
            share = len(range(p, rows, pe))
            if len(words) != share * entry["words_per_neuron"]:
                raise StageError(f"{folder}/{index}-{p}-weights.bin holds {len(words)} words, the manifest says "
                                 f"{share * entry['words_per_neuron']}")
            bits[p::pe] = _words_to_bits(words, simd, share)
            values[p::pe] = np.fromfile(folder / f"{index}-{p}-{entry['values']}.bin", dtype="<i8")
        stored = bits[: entry["n_out"], : entry["n_in"]]
        flips = np.asarray(entry["flips"], dtype=bool)
        signed = np.where(stored > 0, 1, -1).astype(np.int8) * np.where(flips, -1, 1).astype(np.int8)[:, None]
        layer = dict(entry, stored=stored, weights=np.ascontiguousarray(signed.T), flips=flips)
        layer["bias" if entry["kind"] == "output" else "thresholds"] = values[: entry["n_out"]]
        layers.append(layer)
    return dict(manifest, layers=layers)


def bnn_forward(bnn: dict, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Integer-only inference from a read-back export, as the hardware computes it: the hidden layers' outputs
    (0/1 bits, 1 for +1) and the output layer's accumulators (units of 2^-bias frac bits; argmax is the class)."""
    layers = bnn["layers"]
    q = quantize_input(x, bnn["input_frac_bits"])
    first = layers[0]
    signed = np.where(first["stored"] > 0, 1, -1).astype(np.int64)  # (n_out, n_in)
    bits = (q @ signed.T >= first["thresholds"]).astype(np.int64)
    hidden = [bits]
    for layer in layers[1:]:
        w = layer["stored"].astype(np.int64)
        popcount = bits @ w.T + (1 - bits) @ (1 - w).T  # xnor popcount
        if layer["kind"] == "output":
            dot = 2 * popcount - layer["n_in"]
            return hidden, dot * 2 ** layer["frac_bits"] + layer["bias"]
        bits = (popcount >= layer["thresholds"]).astype(np.int64)
        hidden.append(bits)
    raise StageError("the export has no output layer")
