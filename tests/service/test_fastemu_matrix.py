"""Issue 7's acceptance matrix: the vectorized emulator against hls4ml's own compiled C simulation
(``hls_model.predict``) on 100,000 inputs per configuration, compared bit for bit (the float32 outputs'
bit patterns, so that even -0.0 against +0.0 would fail).

The network is the default jet tagger (16 -> 64 -> 32 -> 32 -> 5, ReLU, softmax), trained for two
epochs; each configuration converts it with hls4ml as fpgaflow's converter does (``hls_config``),
then changes what the configuration is about. The inputs are half jets from the test distribution and
half random at scales from 0.3 to 64, which wrap or saturate the input and the layers' results. The
QAT model's case is in test_qat.py (its fixture already converts one).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fpgaflow.spec import ExperimentSpec, HLSSpec

pytestmark = pytest.mark.slow

SAMPLES = 100_000
DENSE = ("fc1", "fc2", "fc3", "output")

# name: (HLSSpec fields, what else changes: "auto" results, "pruned" kernels)
CONFIGS = {
    "default": ({"precision": "ap_fixed<16,6>"}, None),
    "auto": ({"precision": "ap_fixed<16,6>"}, "auto"),
    "narrow8": ({"precision": "ap_fixed<8,3>"}, None),
    "narrow6": ({"precision": "ap_fixed<6,2>"}, None),
    "rnd_sat": ({"precision": "ap_fixed<16,6,AP_RND,AP_SAT>", "layers": {
        "fc2": {"precision": {"accum": "ap_fixed<20,8,AP_RND,AP_SAT>"}},  # products rounded to the accumulator
        # products fit (7 + 6 fraction bits) but sums can saturate: added in the C loop's order
        "fc3": {"precision": {"weight": "ap_fixed<10,4,AP_RND_CONV,AP_SAT_SYM>", "accum": "ap_fixed<16,3,AP_TRN,AP_SAT>"}},
        "relu2": {"precision": {"result": "ap_ufixed<12,5,AP_RND_ZERO,AP_SAT>"}},
        "output": {"precision": {"result": "ap_fixed<14,5,AP_RND_INF,AP_SAT_ZERO>"}},
    }}, None),
    "pruned75": ({"precision": "ap_fixed<16,6>"}, "pruned"),
    "resource": ({"precision": "ap_fixed<16,6>", "strategy": "Resource", "reuseFactor": 4,
                  "layers": {"fc1": {"reuseFactor": 32}}}, None),  # 32 > n_in = 16: the rf_gt_nin kernel
    "resource_rnd_sat": ({"precision": "ap_fixed<12,4,AP_RND_CONV,AP_SAT>", "strategy": "Resource", "reuseFactor": 8}, None),
    "stream": ({"precision": "ap_fixed<16,6>", "ioType": "io_stream"}, None),
    "stream_resource": ({"precision": "ap_fixed<12,4,AP_RND,AP_SAT>", "ioType": "io_stream", "strategy": "Resource",
                         "reuseFactor": 4}, None),
}


@pytest.fixture(scope="module")
def jet_tagger():
    import keras

    from fpgaflow_trainer.model import build_model
    from tests.synthetic_jets import synthetic_jets

    x, y = synthetic_jets(20_000, seed=3)
    mean, std = x.mean(axis=0), x.std(axis=0)
    keras.utils.set_random_seed(3)
    model = build_model(ExperimentSpec.model_validate({}).model, (16,), 5)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit((x - mean) / std, y, epochs=2, batch_size=512, verbose=0)
    jets, _ = synthetic_jets(SAMPLES // 2, seed=4)
    rng = np.random.default_rng(5)
    scales = rng.choice([0.3, 1.0, 4.0, 16.0, 64.0], size=(SAMPLES // 2, 1))
    x = np.concatenate([(jets - mean) / std, rng.normal(size=(SAMPLES // 2, 16)) * scales]).astype(np.float32)
    return model, np.ascontiguousarray(x)


def pruned(model, sparsity: float = 0.75):
    """A copy of the model with the smallest-magnitude 75 % of each kernel set to zero, as the trainer's
    magnitude pruning leaves it."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in DENSE:
        layer = copy.get_layer(name)
        kernel, bias = layer.get_weights()
        threshold = np.quantile(np.abs(kernel), sparsity)
        layer.set_weights([np.where(np.abs(kernel) <= threshold, 0.0, kernel), bias])
    return copy


def hls_config(model, hls: HLSSpec, change: str | None) -> dict:
    import hls4ml

    from fpgaflow_converter.config import hls_config
    from fpgaflow_converter.convert import correct_reuse_factors, multiplier_shapes

    base = hls4ml.utils.config_from_keras_model(model, granularity="name", default_precision=hls.precision,
                                                default_reuse_factor=hls.reuse_factor, backend="Vitis")
    config = hls_config(base, hls, n_classes=5)
    if change == "auto":  # hls4ml derives every dense and ReLU result type (and accumulator) itself
        for name, layer in config["LayerName"].items():
            if name in DENSE or name.startswith("relu"):
                layer["Precision"] = {"result": "auto"} if name.startswith("relu") else {
                    "weight": hls.precision, "bias": hls.precision, "result": "auto", "accum": "auto"}
    correct_reuse_factors(config, multiplier_shapes(model), hls4ml.backends.get_backend("Vitis"))
    return config


@pytest.fixture(scope="module")
def converted(jet_tagger, tmp_path_factory):
    """Every configuration converted and compiled (two g++ at a time), with hls4ml's predictions."""
    import hls4ml

    model, x = jet_tagger
    folder = tmp_path_factory.mktemp("matrix")
    converting = threading.Lock()  # hls4ml's Keras 3 layer handlers keep state while converting

    def build(name):
        fields, change = CONFIGS[name]
        hls = HLSSpec.model_validate(fields)
        with converting:
            net = pruned(model) if change == "pruned" else model
            hls_model = hls4ml.converters.convert_from_keras_model(
                net, hls_config=hls_config(net, hls, change), output_dir=str(folder / name), project_name="myproject",
                backend="Vitis", io_type=hls.io_type)
        hls_model.compile()
        return name, folder / name, np.asarray(hls_model.predict(x)).reshape(len(x), -1)

    with ThreadPoolExecutor(2) as pool:
        return {name: (project, expected) for name, project, expected in pool.map(build, CONFIGS)}


def firmware_text(project, name: str) -> str:
    return (project / "firmware" / name).read_text()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bit_identical_to_hls4ml_on_100k_inputs(converted, jet_tagger, name):
    from fpgaflow.emulation.project import load_project

    project, expected = converted[name]
    _, x = jet_tagger
    fast = load_project(project)
    got = fast.predict(x)
    assert len(x) == SAMPLES and np.ptp(expected, axis=0).max() > 0  # a real, input-dependent output
    differ = (got.view(np.uint32) != expected.view(np.uint32)).any(axis=1)
    assert not differ.any(), f"{name}: {differ.sum()} of {len(x)} samples differ, first {np.flatnonzero(differ)[:5]}; paths {fast.paths}"


def test_the_configurations_exercise_what_they_name(converted):
    """Each configuration's project really has the kernels, types and zeros it is about, and the fast
    (float64) path serves every layer it can prove exact."""
    from fpgaflow.emulation.project import load_project

    params = {name: firmware_text(converted[name][0], "parameters.h") for name in CONFIGS}
    defines = {name: firmware_text(converted[name][0], "defines.h") for name in CONFIGS}
    assert "nnet::DenseResource_rf_gt_nin_rem0" in params["resource"] and "nnet::DenseResource_rf_leq_nin" in params["resource"]
    assert "nnet::DenseLatency" not in params["resource_rnd_sat"]
    assert "ap_fixed<20,8,AP_RND,AP_SAT,0> fc2_accum_t" in defines["rnd_sat"]
    assert "ap_fixed<6,2>" in defines["narrow6"]
    assert "nnet::array<ap_fixed<16,6>, 16*1> input_t" in defines["stream"] and "nnet::io_stream" in params["stream"]
    assert "nnet::io_stream" in params["stream_resource"] and "nnet::DenseResource" in params["stream_resource"]
    widths = [int(w) for w in re.findall(r"typedef ap_fixed<(\d+),\d+> \w+_result_t;", defines["auto"])]
    assert len(widths) == 4 and min(widths) > 32  # hls4ml's derived dense result types: exact, wide
    weights = np.loadtxt(converted["pruned75"][0] / "firmware" / "weights" / "w2.txt", delimiter=",")
    assert 0.74 <= (weights == 0).mean() <= 0.80
    paths = {name: load_project(converted[name][0]).paths for name in CONFIGS}
    for name in ("default", "narrow8", "narrow6", "pruned75", "resource", "resource_rnd_sat", "stream", "stream_resource"):
        assert set(paths[name].values()) == {"float64"}, (name, paths[name])
    assert paths["rnd_sat"]["fc2"] == "int64 (products are rounded to the accumulator)"
    assert paths["rnd_sat"]["fc3"] == "int64 (the accumulator may saturate: added in the C loop's order)"
    assert paths["rnd_sat"]["fc1"] == paths["rnd_sat"]["softmax"] == "float64"
