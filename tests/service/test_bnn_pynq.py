"""The BNN-PYNQ export read back the way BNN-PYNQ's overlay reads it, and the per-layer PE/SIMD of the spec.

The reader below is written from BNN-PYNQ's sources, independently of fpgaflow_converter.export:
- bnn/src/library/host/foldedmv-offload.cpp, FoldedMVLoadLayerMem: for layer l and PE p it opens
  "<dir>/l-p-weights.bin" and reads WMEM 8-byte ExtMemWords (unsigned long long, native byte order), then
  "<dir>/l-p-thres.bin" and reads TMEM x API words (API = 1 for lfcW1A1);
- bnn/src/network/lfcW1A1/hw/top.cpp: weights are BinaryWeights<SIMD, PE, WMEM> (a word's low SIMD bits),
  thresholds ap_int<16> (a word's low 16 bits, signed); every layer is XnorMul with a 1-bit output;
- finn-hlslib's ThresholdsActivation: a neuron outputs 1 when threshold < accumulator (std::less);
  its matrix-vector unit takes weight tile nf * (MW / SIMD) + sf of PE pe for neuron nf * PE + pe;
- foldedmv-offload.cpp, binarizeAndPack: input i is bit i % 64 of word i / 64, padding 0 bits; the class of
  testPrebinarized_nolabel_multiple_images is the integer part of log2 of the 64-bit output word.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fpgaflow.errors import SpecError, StageError
from fpgaflow.spec import ExperimentSpec, LayerHLSSpec, bnn_folding
from fpgaflow_converter import export

WIDTHS = [32, 16]


# ------------------------------------------------------------------------------ the overlay's reader


def overlay_config(folding: list[tuple[str, int, int]], n_in: int, widths: list[int], n_out: int) -> list[dict]:
    """config.h as finnthesizer computes it (convertFCNetwork): MW, MH, PE, SIMD, WMEM, TMEM per layer."""
    config, mw = [], math.ceil(n_in / max(folding[0][2], 64)) * max(folding[0][2], 64)
    heights = [*widths, n_out]
    for index, (_, pe, simd) in enumerate(folding):
        pad = max(pe, 64) if index == len(folding) - 1 else pe
        mh = math.ceil(heights[index] / pad) * pad
        config.append({"mw": mw, "mh": mh, "pe": pe, "simd": simd, "wmem": mw * mh // (pe * simd), "tmem": mh // pe})
        mw = mh
    return config


def load_layer(folder, layer: int, c: dict) -> tuple[np.ndarray, np.ndarray]:
    """FoldedMVLoadLayerMem for one layer: m_weights[pe][line] (uint64) and m_thresholds[pe][line] (int16)."""
    weights = np.zeros((c["pe"], c["wmem"]), dtype=np.uint64)
    thresholds = np.zeros((c["pe"], c["tmem"]), dtype=np.int64)
    for pe in range(c["pe"]):
        raw = (folder / f"{layer}-{pe}-weights.bin").read_bytes()
        assert len(raw) == 8 * c["wmem"], f"{layer}-{pe}-weights.bin"
        weights[pe] = np.frombuffer(raw, dtype="<u8")
        raw = (folder / f"{layer}-{pe}-thres.bin").read_bytes()
        assert len(raw) == 8 * c["tmem"], f"{layer}-{pe}-thres.bin"
        low16 = np.frombuffer(raw, dtype="<u8") & np.uint64(0xFFFF)
        thresholds[pe] = np.where(low16 >= 2**15, low16.astype(np.int64) - 2**16, low16.astype(np.int64))
    return weights, thresholds


def run_layer(inputs: np.ndarray, weights: np.ndarray, thresholds: np.ndarray, c: dict) -> np.ndarray:
    """The matrix-vector-threshold unit on rows of MW input bits: MH output bits."""
    sf_count = c["mw"] // c["simd"]
    simd_bits = (weights[:, :, None] >> np.arange(c["simd"], dtype=np.uint64)) & np.uint64(1)  # (pe, wmem, simd)
    out = np.zeros((len(inputs), c["mh"]), dtype=np.int64)
    for nf in range(c["tmem"]):
        for pe in range(c["pe"]):
            row = simd_bits[pe, nf * sf_count:(nf + 1) * sf_count].reshape(-1).astype(np.int64)
            popcount = (inputs == row).sum(axis=1)  # XnorMul over all MW bits, padding included
            out[:, nf * c["pe"] + pe] = thresholds[pe, nf] < popcount
    return out


def run_overlay(folder, config: list[dict], input_bits: np.ndarray) -> list[np.ndarray]:
    """Every layer's output bits for binarized samples (n, n_in), the input padded with 0 bits to MW."""
    bits = np.zeros((len(input_bits), config[0]["mw"]), dtype=np.int64)
    bits[:, : input_bits.shape[1]] = input_bits
    outputs = []
    for layer, c in enumerate(config):
        bits = run_layer(bits, *load_layer(folder, layer, c), c)
        outputs.append(bits)
    return outputs


def overlay_classes(output_bits: np.ndarray) -> np.ndarray:
    """(unsigned) log2 of the output word, 0 for an empty word."""
    words = [sum(int(b) << i for i, b in enumerate(row[:64])) for row in output_bits]
    return np.array([0 if w == 0 else w.bit_length() - 1 for w in words])


# ------------------------------------------------------------------------------ the trained model


@pytest.fixture(scope="module")
def digits_bnn():
    """A binary model on scikit-learn's 8x8 digits (pixels 0..16, binarized at 8), three epochs."""
    import keras
    from sklearn.datasets import load_digits

    from fpgaflow.preprocess import Scaler
    from fpgaflow.spec import ModelSpec
    from fpgaflow_trainer.model import build_model, input_threshold, prepare_binary_input

    keras.utils.set_random_seed(7)
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(x))
    train, test = order[:1400], order[1400:]
    spec = ModelSpec(type="binary", layers=WIDTHS)
    scaler = Scaler.fit(x[train], [f"p{i}" for i in range(64)])
    model = build_model(spec, (64,), 10)
    threshold = input_threshold(spec, x[train])
    assert threshold == 8.0
    prepare_binary_input(model, threshold, scaler.mean, scaler.scale)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(scaler.apply(x[train]), y[train], epochs=3, batch_size=64, verbose=0)
    return model, x[test], scaler.apply(x[test]), y[test]


def keras_signs(model, x: np.ndarray) -> list[np.ndarray]:
    """The Keras model's +-1 activations as bits: each sign layer's, then the output logits' signs."""
    import keras

    names = [f"sign{i + 1}" for i in range(len(WIDTHS))] + ["output"]
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    return [(np.asarray(v) >= 0).astype(np.int64) for v in probe.predict(x, verbose=0)]


FOLDINGS = {
    "lfc": {},
    "custom": {"fc1": LayerHLSSpec(pe=4, simd=16), "fc2": LayerHLSSpec(pe=8, simd=8), "output": LayerHLSSpec(pe=2, simd=16)},
}


@pytest.mark.slow
@pytest.mark.parametrize("which", list(FOLDINGS))
def test_the_overlay_reader_computes_what_the_keras_model_computes(tmp_path, digits_bnn, which):
    model, x_raw, x, y = digits_bnn
    folding = bnn_folding(WIDTHS, FOLDINGS[which])
    classes = [f"digit {c}" for c in range(10)]
    manifest = export.export_bnn(model, tmp_path, folding, classes)

    config = overlay_config(folding, 64, WIDTHS, 10)
    expected = {f"{layer}-{pe}-{kind}.bin" for layer, c in enumerate(config) for pe in range(c["pe"])
                for kind in ("weights", "thres")}
    assert {p.name for p in tmp_path.iterdir()} == expected | {"classes.txt", "bnn.json"}
    assert (tmp_path / "classes.txt").read_text() == "\n".join(classes)  # finnthesizer's "\n".join, no final newline
    assert [{k: e[k] for k in ("mw", "mh", "pe", "simd", "wmem", "tmem")} for e in manifest["layers"]] == config
    if which == "lfc":
        assert [(e["pe"], e["simd"]) for e in manifest["layers"]] == [(32, 64), (64, 32), (16, 8)]

    input_bits = (x_raw >= json.loads((tmp_path / "bnn.json").read_text())["input_threshold"]).astype(np.int64)
    overlay = run_overlay(tmp_path, config, input_bits)
    reference = keras_signs(model, x)
    for layer, (ours, theirs) in enumerate(zip(overlay, reference, strict=True)):
        assert not overlay[layer][:, theirs.shape[1]:].any(), f"layer {layer}: a padded neuron fired"
        assert np.array_equal(ours[:, : theirs.shape[1]], theirs), f"layer {layer} differs from the Keras model"
    assert 0.1 < reference[0].mean() < 0.9  # the signs are not trivially constant

    # The overlay's class (highest set output bit) is the same rule applied to the Keras model's logits.
    assert np.array_equal(overlay_classes(overlay[-1]), overlay_classes(reference[-1]))
    # The model's own class (argmax of its logits) from the output layer's popcounts, integers only, with
    # bnn.json's bias: equal to the Keras model's prediction on every test sample.
    bnn = export.read_bnn(tmp_path)
    _, popcount = export.bnn_forward(bnn, x_raw)
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    assert np.array_equal(export.host_argmax(bnn, popcount), predicted)
    assert (predicted == y).mean() > 0.5


@pytest.mark.slow
def test_negative_gamma_neurons_are_stored_flipped_and_still_exact(tmp_path, digits_bnn):
    import keras

    model, x_raw, x, _ = digits_bnn
    flipped = keras.models.clone_model(model)
    flipped.set_weights(model.get_weights())
    bn = flipped.get_layer("bn2")
    gamma, beta, mean, var = bn.get_weights()
    gamma[::2] *= -1
    bn.set_weights([gamma, beta, mean, var])
    folding = bnn_folding(WIDTHS, {})
    export.export_bnn(flipped, tmp_path, folding)
    bnn = export.read_bnn(tmp_path)
    assert bnn["layers"][1]["flips"].tolist() == [i % 2 == 0 for i in range(16)]
    assert np.array_equal(bnn["layers"][1]["weights"], flipped.get_layer("fc2").binary_kernel().astype(np.int8))
    overlay = run_overlay(tmp_path, overlay_config(folding, 64, WIDTHS, 10),
                          (x_raw >= bnn["input_threshold"]).astype(np.int64))
    assert np.array_equal(overlay[1][:, :16], keras_signs(flipped, x)[1])


def test_export_refuses_a_simd_that_does_not_divide_the_padded_input(tmp_path, digits_bnn):
    model = digits_bnn[0]
    folding = bnn_folding(WIDTHS, {"fc1": LayerHLSSpec(simd=48)})
    with pytest.raises(StageError, match=r"hls\.layers\.fc1\.simd: 48 does not divide .* 64"):
        export.export_bnn(model, tmp_path, folding)


# ------------------------------------------------------------------------------ the spec's PE and SIMD


def _spec(model: dict, layers: dict) -> dict:
    return {"dataset": {"name": "digits"}, "model": model, "hls": {"layers": layers}}


def test_lfc_folding_is_the_default():
    assert bnn_folding([1024, 1024, 1024], {}) == [("fc1", 32, 64), ("fc2", 64, 32), ("fc3", 32, 64), ("output", 16, 8)]
    spec = ExperimentSpec.model_validate(_spec({"type": "binary", "layers": [100, 50]}, {"fc2": {"pe": 16, "simd": 4}}))
    assert bnn_folding(spec.model.layers, spec.hls.layers) == [("fc1", 32, 64), ("fc2", 16, 4), ("output", 16, 8)]


@pytest.mark.parametrize("model,layers,field", [
    ({"type": "binary", "layers": [100, 50]}, {"fc2": {"simd": 48}}, "hls.layers.fc2.simd"),  # 100 pads to 128
    ({"type": "binary", "layers": [100, 50]}, {"fc1": {"pe": 10}}, "hls.layers.fc2.simd"),  # 100 pads to 100, not / 32
    ({"type": "binary", "layers": [64]}, {"output": {"simd": 3}}, "hls.layers.output.simd"),
])
def test_a_simd_that_does_not_divide_the_padded_width_is_refused_naming_the_field(model, layers, field):
    with pytest.raises(SpecError) as raised:
        ExperimentSpec.model_validate(_spec(model, layers))
    assert [f for f, _ in raised.value.problems] == [field], raised.value


def test_pe_and_simd_are_bounded_and_belong_to_binary_models():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="simd"):
        ExperimentSpec.model_validate(_spec({"type": "binary", "layers": [64]}, {"fc1": {"simd": 65}}))
    with pytest.raises(ValidationError, match="pe"):
        ExperimentSpec.model_validate(_spec({"type": "binary", "layers": [64]}, {"fc1": {"pe": 0}}))
    with pytest.raises(ValidationError, match="fold a binary model"):
        ExperimentSpec.model_validate(_spec({"type": "mlp", "layers": [64]}, {"fc1": {"pe": 4}}))
