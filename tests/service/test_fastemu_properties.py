"""Property tests of the vectorized emulator: random small networks with random ap_fixed types, modes and
weights, converted and compiled by hls4ml, must give hls_model.predict's bits on random inputs.

Each network draws 1 to 3 Dense layers (1 to 12 units, weights at random scales with up to 80 % zeros),
each followed by ReLU, a linear Activation or nothing, and maybe a softmax, as io_parallel or io_stream;
every type (input, weights, biases, accumulators, results) is drawn from ap_fixed/ap_ufixed of 2 to 20
bits in all seven rounding and four overflow modes, accumulators sometimes left to hls4ml ('auto'),
sometimes narrow enough to saturate. The seeds are fixed, so a failure reproduces; NETWORKS sets how many are drawn."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fpgaflow.emulation.apfixed import OVERFLOW_MODES, QUANTIZATION_MODES

pytestmark = pytest.mark.slow

NETWORKS = int(__import__("os").environ.get("FASTEMU_NETWORKS", 10))
SAMPLES = 20_000


def random_type(rng, max_width: int = 20, signed: bool | None = None) -> str:
    signed = bool(rng.random() < 0.8) if signed is None else signed
    width = int(rng.integers(2, max_width + 1))
    integer = int(rng.integers(1 if signed else 0, min(width, 10) + 1))
    modes = f",{rng.choice(QUANTIZATION_MODES)},{rng.choice(OVERFLOW_MODES)}" if rng.random() < 0.7 else ""
    return f"ap_{'' if signed else 'u'}fixed<{width},{integer}{modes}>"


def random_network(seed: int):
    """A Keras model, the per-layer hls4ml precisions drawn for it, its input type and its io type."""
    import keras

    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(1, 13))
    inputs = keras.Input((n_in,), name="x")
    h, precision = inputs, {}
    n_dense = int(rng.integers(1, 4))
    for i in range(n_dense):
        units = int(rng.integers(2 if i == n_dense - 1 else 1, 13))
        dense = keras.layers.Dense(units, name=f"fc{i}")
        h = dense(h)
        kernel = rng.normal(size=dense.kernel.shape) * rng.choice([0.1, 0.5, 1.0, 4.0])
        kernel[rng.random(kernel.shape) < rng.uniform(0, 0.8)] = 0.0
        dense.set_weights([kernel, rng.normal(size=units) * rng.choice([0.1, 1.0, 8.0])])
        accum = "auto" if rng.random() < 0.5 else random_type(rng, max_width=32, signed=True)
        precision[f"fc{i}"] = {"weight": random_type(rng), "bias": random_type(rng), "accum": accum,
                               "result": random_type(rng)}
        kind = rng.choice(["relu", "linear", "none"])
        if kind != "none":
            h = keras.layers.Activation(str(kind), name=f"{kind}{i}")(h)
            precision[f"{kind}{i}"] = {"result": random_type(rng)}
    if rng.random() < 0.5:
        h = keras.layers.Activation("softmax", name="softmax")(h)
        precision["softmax"] = {"result": random_type(rng, max_width=18, signed=False)}
    input_type = random_type(rng)
    return keras.Model(inputs, h), precision, input_type, "io_stream" if rng.random() < 0.4 else "io_parallel"


def hls_config(model, precision: dict, input_type: str) -> dict:
    import hls4ml

    from fpgaflow_converter.config import SOFTMAX_NORM_TYPE, SOFTMAX_TABLE_SIZE, softmax_sum_type

    config = hls4ml.utils.config_from_keras_model(model, granularity="name", default_precision="ap_fixed<16,6>",
                                                  backend="Vitis")
    for name, layer in config["LayerName"].items():
        if name == "softmax":
            layer.update({"Precision": precision[name], "inv_inp_t": softmax_sum_type(model.outputs[0].shape[-1]),
                          "TableSize": SOFTMAX_TABLE_SIZE, "inp_norm_t": SOFTMAX_NORM_TYPE})
        else:
            layer["Precision"] = precision.get(name, {"result": input_type})
    return config


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """NETWORKS random networks converted (one at a time: hls4ml's converter keeps state) and compiled
    (two g++ at a time), each with its inputs and hls4ml's predictions."""
    import hls4ml

    folder = tmp_path_factory.mktemp("random")
    converting = threading.Lock()

    def build(seed):
        with converting:
            model, precision, input_type, io_type = random_network(seed)
            hls_model = hls4ml.converters.convert_from_keras_model(
                model, hls_config=hls_config(model, precision, input_type), output_dir=str(folder / f"net{seed}"),
                project_name="myproject", backend="Vitis", io_type=io_type)
        hls_model.compile()
        rng = np.random.default_rng(1000 + seed)
        n_in = model.inputs[0].shape[-1]
        x = (rng.normal(size=(SAMPLES, n_in)) * rng.choice([0.1, 1.0, 10.0, 100.0], size=(SAMPLES, 1))).astype(np.float32)
        x = np.ascontiguousarray(x)
        return (folder / f"net{seed}", x, np.asarray(hls_model.predict(x)).reshape(SAMPLES, -1), precision,
                f"{input_type}, {io_type}")

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(build, range(NETWORKS)))


@pytest.mark.parametrize("seed", range(NETWORKS))
def test_random_network_is_bit_identical(networks, seed):
    from fpgaflow.emulation.project import load_project

    project, x, expected, precision, input_type = networks[seed]
    fast = load_project(project)
    got = fast.predict(x)
    differ = (got.view(np.uint32) != expected.view(np.uint32)).any(axis=1)
    assert not differ.any(), (f"network {seed} (input {input_type}, {precision}): {differ.sum()} of {len(x)} samples "
                              f"differ, first {np.flatnonzero(differ)[:5]}; paths {fast.paths}")


def test_the_random_networks_cover_both_paths_and_every_layer_kind(networks):
    from fpgaflow.emulation.project import load_project

    layers = [layer for project, *_ in networks for layer in load_project(project).layers]
    assert {layer.kind for layer in layers} >= {"dense", "relu", "softmax"}
    paths = {layer.fast is not None for layer in layers if layer.kind == "dense"}
    assert paths == {True, False}  # some dense layers proved exact in float64, some left to int64
    assert {kind.rsplit(", ", 1)[1] for *_, kind in networks} == {"io_parallel", "io_stream"}
