"""Exports of the convert stage: the hls4ml project with a vendor build script, and a binarized model's
parameter folder in the layout Xilinx BNN-PYNQ's overlay loader reads. The byte layouts are in docs/exports.md."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

import numpy as np

from fpgaflow.errors import StageError
from fpgaflow.spec import BNN_WORD_BITS, bnn_folding, bnn_padded_inputs, pad_to

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
# The layout is the one BNN-PYNQ's host library loads (bnn/src/library/host/foldedmv-offload.cpp,
# FoldedMVLoadLayerMem) and its finnthesizer writes (bnn/src/training/finnthesizer.py, BNNProcElemMem).

MANIFEST = "bnn.json"
CLASSES = "classes.txt"
WORD_BITS = BNN_WORD_BITS  # ExtMemWord: unsigned long long, read with its native (little-endian) byte order
THRESHOLD_MAX = 2**15 - 1  # thresholds are ap_int<16> in the overlay; finnthesizer saturates them to int16
PAD_THRESHOLD = THRESHOLD_MAX  # finnthesizer pads neurons with threshold 2^16 - 1, saturated to this
OUTPUT_BIAS_FRAC_BITS = 16  # bnn.json's output bias, for a host-side argmax (not loaded by the overlay)


def _bits_to_words(bits: np.ndarray, simd: int) -> np.ndarray:
    """Rows of 0/1 (length a multiple of simd) as uint64 words, simd bits each, element j of a group at bit j."""
    groups = bits.reshape(len(bits), -1, simd).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(simd, dtype=np.uint64))
    return (groups * weights).sum(axis=-1, dtype=np.uint64).reshape(-1)


def _words_to_bits(words: np.ndarray, simd: int, rows: int) -> np.ndarray:
    shifts = np.arange(simd, dtype=np.uint64)
    bits = (words[:, None] >> shifts) & np.uint64(1)
    return bits.reshape(rows, -1).astype(np.uint8)


def _binary_layers(model) -> tuple[object, list[tuple], object]:
    """The BinarizeInput layer, [(BinaryDense, BatchNormalization), ...] of the hidden layers and the output
    BinaryDense of a ``binary`` model (services/trainer/model.py's build_binary)."""
    import keras

    from fpgaflow.keras_model import BinarizeInput, BinaryDense, SignActivation

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    binarize = layers[0] if layers and isinstance(layers[0], BinarizeInput) else None
    hidden, i = [], 1
    while binarize is not None and i + 2 < len(layers) and isinstance(layers[i], BinaryDense):
        dense, bn, sign = layers[i:i + 3]
        if not (isinstance(bn, keras.layers.BatchNormalization) and isinstance(sign, SignActivation)) or dense.use_bias:
            break
        hidden.append((dense, bn))
        i += 3
    rest = layers[i:]
    if binarize is None or not hidden or len(rest) != 2 or not isinstance(rest[0], BinaryDense):
        names = ", ".join(f"{lay.name} ({type(lay).__name__})" for lay in layers)
        raise StageError(f"the BNN export needs a binary model (BinarizeInput; BinaryDense, BatchNormalization, "
                         f"SignActivation per hidden layer; an output BinaryDense and softmax); this model has {names}")
    return binarize, hidden, rest[0]


def _affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """bn(x) = x * scale + shift (float64); a negative scale marks a neuron to flip."""
    gamma, beta, mean, var = (np.asarray(w, dtype=np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def popcount_thresholds(fires, n_in: int, flips: np.ndarray, name: str) -> np.ndarray:
    """Per neuron the least popcount P (agreements of n_in +-1 inputs with the neuron's stored, flipped weights)
    at which ``fires`` (the model's own test that the neuron's output is +1, given its dot products, rows of
    one value per neuron) holds: the stored row's dot product is 2P - n_in, the model's that times -1 where
    flipped. n_in + 1 when it never does. Every P in 0..n_in is tried, so the threshold is exact; a neuron
    whose output is not monotone in P is an error."""
    counts = np.arange(n_in + 1)
    signs = np.where(flips, -1, 1)
    on = np.asarray(fires(np.outer(2 * counts - n_in, np.ones(len(flips))) * signs))  # (n_in + 1, n_out)
    first = np.where(on.any(axis=0), on.argmax(axis=0), n_in + 1)
    monotone = on == (counts[:, None] >= first[None, :])
    if not monotone.all():
        bad = int(np.flatnonzero(~monotone.all(axis=0))[0])
        raise StageError(f"{name}: neuron {bad}'s sign is not a threshold on its popcount; cannot export it")
    return first.astype(np.int64)


def _batchnorm_fires(bn):
    import keras

    return lambda x: keras.ops.convert_to_numpy(bn(x.astype(np.float32), training=False)) >= 0


def _logit_fires(bias: np.ndarray):
    """The output layer's logit (float32 dot product plus bias, as BinaryDense computes it) is >= 0."""
    return lambda x: (x.astype(np.float32) + bias.astype(np.float32)) >= 0


def pe_files(bits: np.ndarray, thresholds: np.ndarray, pe: int, simd: int) -> list[tuple[bytes, bytes]]:
    """(weights, thresholds) bytes per PE of a padded layer: neuron r goes to PE r % pe, each neuron's row as
    consecutive words of simd bits; one int64 threshold per neuron (BNN-PYNQ's TMEM line, one threshold each)."""
    return [(_bits_to_words(bits[p::pe], simd).astype("<u8").tobytes(), thresholds[p::pe].astype("<i8").tobytes())
            for p in range(pe)]


def _pad_layer(stored: np.ndarray, thresholds: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """finnthesizer's padding: weights with 1 bits (padded inputs are 0 bits: they agree with none), neurons
    with a threshold no popcount reaches."""
    n_out, n_in = stored.shape
    bits = np.ones((rows, cols), dtype=np.uint8)
    bits[:n_out, :n_in] = stored
    padded = np.full(rows, PAD_THRESHOLD, dtype=np.int64)
    padded[:n_out] = thresholds
    return bits, padded


def _check_folding(name: str, pe: int, simd: int, rows: int, cols: int) -> None:
    if not 1 <= simd <= WORD_BITS or cols % simd:
        raise StageError(f"hls.layers.{name}.simd: {simd} does not divide the layer's padded input width {cols} "
                         f"(or exceeds {WORD_BITS}); BNN-PYNQ packs a neuron's inputs in words of SIMD bits")
    if pe < 1 or rows % pe:
        raise StageError(f"hls.layers.{name}.pe: {pe} does not divide the layer's padded neuron count {rows}")


def _layer_matrices(binarize, hidden, output) -> list[dict]:
    """Per layer: name, stored 0/1 rows (neurons x inputs, flipped), popcount thresholds, flips."""
    layers = []
    for dense, bn in hidden:
        kernel = dense.binary_kernel()  # (n_in, n_out) of +-1
        flips = _affine(bn)[0] < 0
        stored = ((kernel * np.where(flips, -1, 1)).T > 0).astype(np.uint8)
        thresholds = popcount_thresholds(_batchnorm_fires(bn), kernel.shape[0], flips, bn.name)
        layers.append({"name": dense.name, "batchnorm": bn.name, "stored": stored, "thresholds": thresholds,
                       "flips": flips})
    kernel = output.binary_kernel()
    bias = np.asarray(output.get_weights()[1] if output.use_bias else np.zeros(kernel.shape[1]), dtype=np.float32)
    flips = np.zeros(kernel.shape[1], dtype=bool)
    thresholds = popcount_thresholds(_logit_fires(bias), kernel.shape[0], flips, output.name)
    layers.append({"name": output.name, "stored": (kernel.T > 0).astype(np.uint8), "thresholds": thresholds,
                   "flips": flips, "bias": bias})
    return layers


def export_bnn(model, folder: Path, folding: list[tuple[str, int, int]] | None = None,
               classes: list[str] | None = None) -> dict:
    """Writes a ``binary`` model as a BNN-PYNQ parameter folder (docs/exports.md) into ``folder``: per layer l
    and PE p ``l-p-weights.bin`` and ``l-p-thres.bin``, ``classes.txt`` and fpgaflow's manifest bnn.json,
    which it returns. ``folding``: (layer name, PE, SIMD) per fc and output layer (spec.bnn_folding; LFC's by
    default). Every layer is an XNOR-popcount layer with one threshold per neuron, as lfcW1A1's: the inputs
    are binarized (the model's BinarizeInput), the output layer's bits are its logits' signs."""
    binarize, hidden, output = _binary_layers(model)
    matrices = _layer_matrices(binarize, hidden, output)
    widths = [m["stored"].shape[0] for m in matrices[:-1]]
    folding = folding or bnn_folding(widths, {})
    if [name for name, _, _ in folding] != [m["name"] for m in matrices]:
        raise StageError(f"folding names {[f[0] for f in folding]}, the model's layers are {[m['name'] for m in matrices]}")
    n_in = matrices[0]["stored"].shape[1]
    padded_in = bnn_padded_inputs(widths, folding, n_in)
    if int(max(m["stored"].shape[1] for m in matrices)) + 1 > THRESHOLD_MAX:
        raise StageError(f"a layer has more than {THRESHOLD_MAX - 1} inputs: its thresholds exceed the overlay's ap_int<16>")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*-*-*.bin"):
        old.unlink()
    entries = []
    for index, (m, (name, pe, simd), cols) in enumerate(zip(matrices, folding, padded_in, strict=True)):
        n_out, n_in_layer = m["stored"].shape
        last = index == len(matrices) - 1
        rows = pad_to(n_out, max(pe, WORD_BITS) if last else pe)  # the last layer's output is one 64-bit word
        _check_folding(name, pe, simd, rows, int(cols))
        # the overlay fires a neuron when threshold < popcount (finn-hlslib's ThresholdsActivation, comparison
        # std::less): the file holds the least firing popcount minus 1
        bits, thresholds = _pad_layer(m["stored"], m["thresholds"] - 1, rows, int(cols))
        for p, (weights, thres) in enumerate(pe_files(bits, thresholds, pe, simd)):
            (folder / f"{index}-{p}-weights.bin").write_bytes(weights)
            (folder / f"{index}-{p}-thres.bin").write_bytes(thres)
        entry = {"name": name, "n_in": n_in_layer, "n_out": n_out, "mw": int(cols), "mh": rows, "pe": pe, "simd": simd,
                 "wmem": rows * int(cols) // (pe * simd), "tmem": rows // pe, "flips": [int(f) for f in m["flips"]]}
        if last:
            entry["bias"] = [int(b) for b in np.round(m["bias"].astype(np.float64) * 2.0**OUTPUT_BIAS_FRAC_BITS)]
            entry["bias_frac_bits"] = OUTPUT_BIAS_FRAC_BITS
        entries.append(entry)
    names = list(classes) if classes is not None else [str(c) for c in range(matrices[-1]["stored"].shape[0])]
    if len(names) != matrices[-1]["stored"].shape[0]:
        raise StageError(f"{len(names)} class names for {matrices[-1]['stored'].shape[0]} outputs")
    (folder / CLASSES).write_text("\n".join(names))
    manifest = {"format": "BNN-PYNQ", "loader": "bnn/src/library/host/foldedmv-offload.cpp FoldedMVLoadLayerMem",
                "layout_doc": "docs/exports.md", "input_threshold": binarize.raw_threshold, "classes": names,
                "layers": entries}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_bnn(folder: Path) -> dict:
    """An exported parameter folder read back with its manifest: per layer ``stored`` (n_out, n_in) 0/1 bits as
    the files hold them (flipped rows), ``weights`` (n_in, n_out) int8 +-1 as the model's kernel, ``thresholds``
    (int64: a neuron fires when its popcount exceeds it) and ``flips``."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise StageError(f"{folder} has no {MANIFEST}: not a BNN export")
    manifest = json.loads((folder / MANIFEST).read_text())
    layers = []
    for index, entry in enumerate(manifest["layers"]):
        pe, simd, rows, cols = entry["pe"], entry["simd"], entry["mh"], entry["mw"]
        bits = np.empty((rows, cols), dtype=np.uint8)
        thresholds = np.empty(rows, dtype=np.int64)
        for p in range(pe):
            words = np.fromfile(folder / f"{index}-{p}-weights.bin", dtype="<u8")
            if len(words) != entry["wmem"]:
                raise StageError(f"{folder}/{index}-{p}-weights.bin holds {len(words)} words, the manifest says {entry['wmem']}")
            bits[p::pe] = _words_to_bits(words, simd, rows // pe)
            thresholds[p::pe] = np.fromfile(folder / f"{index}-{p}-thres.bin", dtype="<i8")
        stored = bits[: entry["n_out"], : entry["n_in"]]
        flips = np.asarray(entry["flips"], dtype=bool)
        signed = np.where(stored > 0, 1, -1).astype(np.int8) * np.where(flips, -1, 1).astype(np.int8)[:, None]
        layers.append(dict(entry, stored=stored, weights=np.ascontiguousarray(signed.T), flips=flips,
                           thresholds=thresholds[: entry["n_out"]]))
    return dict(manifest, layers=layers)


def binarize_input(x_raw: np.ndarray, threshold: float) -> np.ndarray:
    """Raw inputs as the overlay's host binarizes them: bit 1 where the value is at least the threshold."""
    return (np.asarray(x_raw, dtype=np.float64) >= threshold).astype(np.int64)


def bnn_forward(bnn: dict, x_raw: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Integer-only inference from a read-back export, as the overlay computes it: every layer's output bits
    (1 for +1; the last layer's are the class bits the overlay returns) and the output layer's popcounts."""
    bits = binarize_input(x_raw, bnn["input_threshold"])
    outputs, popcount = [], None
    for layer in bnn["layers"]:
        w = layer["stored"].astype(np.int64)
        popcount = bits @ w.T + (1 - bits) @ (1 - w).T  # xnor popcount
        bits = (popcount > layer["thresholds"]).astype(np.int64)  # threshold < popcount, as the overlay compares
        outputs.append(bits)
    return outputs, popcount


def overlay_class(bits: np.ndarray) -> np.ndarray:
    """The class BNN-PYNQ's host reads from the output word (testPrebinarized_nolabel_multiple_images): the
    integer part of log2 of the word, i.e. the highest set class bit; 0 when no bit is set."""
    bits = np.asarray(bits)
    highest = bits.shape[1] - 1 - np.argmax(bits[:, ::-1], axis=1)
    return np.where(bits.any(axis=1), highest, 0)


def host_argmax(bnn: dict, popcount: np.ndarray) -> np.ndarray:
    """The model's class (argmax of its logits) from the output layer's popcounts and bnn.json's bias, in
    integers: (2P - n_in) * 2^G + bias. The overlay does not return popcounts; this is for a host that does."""
    layer = bnn["layers"][-1]
    scores = (2 * popcount - layer["n_in"]) * 2 ** layer["bias_frac_bits"] + np.asarray(layer["bias"], dtype=np.int64)
    return scores.argmax(axis=1)
