"""Issue 18's acceptance matrix for image models: the vectorized emulator against hls4ml's own compiled C
simulation (``hls_model.predict``) on 10,000 images per configuration, compared bit for bit.

The networks are fpgaflow's own ``cnn`` (two conv-ReLU-maxpool blocks, a dense head) and ``resnet`` (a
residual block: two 3x3 convolutions beside a 1x1 projection, added, activated, pooled), trained for two
epochs on simulated 16x16 top/QCD jet images; plus a network of the layers those two do not use (Conv1D,
batch normalization that hls4ml cannot fold, average pooling). Each configuration converts one with
fpgaflow's hls4ml settings (``hls_config``), then changes what it is about: io_parallel or io_stream, Latency
or Resource, narrow types, rounding and saturating modes, an accumulator that can saturate (added in the C
loop's order on the int64 path). The inputs are the jet images, standardized as in training, and random
images at scales from 0.3 to 64, which saturate or wrap the layers' types.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fpgaflow.spec import DatasetSpec, HLSSpec, ModelSpec

pytestmark = pytest.mark.slow

SAMPLES = 10_000
IMAGES = DatasetSpec(name="jet-images", samples=2000, image_size=16, align_images=True, seed=42)

# name: (network, HLSSpec fields)
CONFIGS = {
    "cnn_parallel": ("cnn", {"precision": "ap_fixed<16,6>"}),
    "cnn_stream": ("cnn", {"precision": "ap_fixed<16,6>", "ioType": "io_stream"}),
    "cnn_resource": ("cnn", {"precision": "ap_fixed<16,6>", "strategy": "Resource", "reuseFactor": 4}),
    "cnn_stream_resource_rnd_sat": ("cnn", {"precision": "ap_fixed<12,4,AP_RND,AP_SAT>", "ioType": "io_stream",
                                            "strategy": "Resource", "reuseFactor": 2}),
    "cnn_narrow": ("cnn", {"precision": "ap_fixed<8,3>", "ioType": "io_stream"}),
    "cnn_saturating": ("cnn", {"precision": "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", "layers": {
        "conv1": {"precision": {"accum": "ap_fixed<18,5,AP_TRN,AP_SAT>"}},  # products rounded to the accumulator
        "pool1": {"precision": {"result": "ap_fixed<10,3,AP_RND_ZERO,AP_SAT_SYM>"}},
        # products fit (7 + 6 fraction bits), sums can saturate: the int64 path adds them in the C loop's order
        "conv2": {"precision": {"weight": "ap_fixed<8,2,AP_RND_INF,AP_SAT>", "accum": "ap_fixed<16,3,AP_TRN,AP_SAT>",
                                "result": "ap_ufixed<12,4,AP_RND,AP_SAT>"}},
    }}),
    "resnet_stream": ("resnet", {"precision": "ap_fixed<16,6>", "ioType": "io_stream"}),
    "resnet_parallel_rnd_sat": ("resnet", {"precision": "ap_fixed<12,5,AP_RND_CONV,AP_SAT>", "layers": {
        "feat_add1": {"precision": {"result": "ap_fixed<10,4,AP_RND,AP_SAT>"}}}}),  # the add's own narrower type
    "resnet_stream_resource": ("resnet", {"precision": "ap_fixed<14,5>", "ioType": "io_stream", "strategy": "Resource",
                                          "reuseFactor": 3}),
    "others_parallel": ("others", {"precision": "ap_fixed<16,6,AP_RND,AP_SAT>"}),
    "others_stream": ("others", {"precision": "ap_fixed<14,5>", "ioType": "io_stream"}),
}


def others(shape):
    """Conv1D over the image's rows, batch normalization after a merge (which hls4ml does not fold into a
    convolution), average pooling, Flatten, Dense, softmax."""
    import keras

    inputs = keras.Input((shape[0], shape[1] * shape[2]), name="features")
    x = keras.layers.Conv1D(6, 3, padding="same", name="conv1d")(inputs)
    x = keras.layers.Activation("relu", name="relu1")(x)
    y = keras.layers.Conv1D(6, 1, name="proj")(inputs)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.AveragePooling1D(2, name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(2, name="output")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="softmax")(x))


@pytest.fixture(scope="module")
def networks():
    """The three networks trained briefly on the jet images, and 10,000 inputs for each."""
    import keras

    from fpgaflow.preprocess import Scaler
    from fpgaflow_trainer.datasets import load_dataset
    from fpgaflow_trainer.model import build_model

    data = load_dataset(IMAGES)
    scaler = Scaler.fit(data.x_train, data.features)
    images = scaler.apply(np.concatenate([data.x_train, data.x_test]))
    rng = np.random.default_rng(5)
    extra = SAMPLES - len(images)
    scales = rng.choice([0.3, 1.0, 4.0, 16.0, 64.0], size=(extra, 1, 1, 1))
    x = np.concatenate([images, rng.normal(size=(extra, *data.shape)) * scales]).astype(np.float32)
    y = np.concatenate([data.y_train, data.y_test])
    built = {}
    for kind in ("cnn", "resnet", "others"):
        keras.utils.set_random_seed(3)
        if kind == "others":
            model = others(data.shape)
        else:
            spec = ModelSpec(type=kind, filters=[4, 8] if kind == "cnn" else [4], layers=[16] if kind == "cnn" else [8])
            model = build_model(spec, data.shape, 2)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        inputs = x.reshape((len(x), *model.inputs[0].shape[1:]))
        model.fit(inputs[: len(y)], y, epochs=2, batch_size=64, verbose=0)
        if kind == "others":  # batch statistics far from (0, 1), so that the normalization does something
            bn = model.get_layer("bn")
            gamma, beta, mean, var = bn.get_weights()
            bn.set_weights([gamma * 1.7, beta + 0.3, mean + 0.2, var * 2.5])
        built[kind] = model, np.ascontiguousarray(inputs)
    return built


def hls_config(model, hls: HLSSpec) -> dict:
    import hls4ml

    from fpgaflow_converter.config import hls_config
    from fpgaflow_converter.convert import correct_reuse_factors, multiplier_shapes

    base = hls4ml.utils.config_from_keras_model(model, granularity="name", default_precision=hls.precision,
                                                default_reuse_factor=hls.reuse_factor, backend="Vitis")
    config = hls_config(base, hls, n_classes=2)
    correct_reuse_factors(config, multiplier_shapes(model), hls4ml.backends.get_backend("Vitis"))
    return config


@pytest.fixture(scope="module")
def converted(networks, tmp_path_factory):
    """Every configuration converted and compiled (two g++ at a time), with hls4ml's predictions."""
    import hls4ml

    folder = tmp_path_factory.mktemp("images")
    converting = threading.Lock()  # hls4ml's Keras 3 layer handlers keep state while converting

    def build(name):
        kind, fields = CONFIGS[name]
        model, x = networks[kind]
        hls = HLSSpec.model_validate(fields)
        with converting:
            hls_model = hls4ml.converters.convert_from_keras_model(
                model, hls_config=hls_config(model, hls), output_dir=str(folder / name), project_name="myproject",
                backend="Vitis", io_type=hls.io_type)
        hls_model.compile()
        return name, folder / name, np.asarray(hls_model.predict(x)).reshape(len(x), -1)

    with ThreadPoolExecutor(2) as pool:
        return {name: (project, expected) for name, project, expected in pool.map(build, CONFIGS)}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bit_identical_to_hls4ml_on_10k_images(converted, networks, name):
    from fpgaflow.emulation.project import load_project

    project, expected = converted[name]
    _, x = networks[CONFIGS[name][0]]
    fast = load_project(project)
    got = fast.predict(x)
    assert len(x) == SAMPLES and np.ptp(expected, axis=0).max() > 0  # a real, input-dependent output
    differ = (got.view(np.uint32) != expected.view(np.uint32)).any(axis=1)
    assert not differ.any(), f"{name}: {differ.sum()} of {len(x)} images differ, first {np.flatnonzero(differ)[:5]}; paths {fast.paths}"


def test_the_configurations_exercise_what_they_name(converted):
    """Each project has the kernels and types its configuration is about, and the emulator covers every layer,
    on the float64 path wherever it can prove it exact."""
    from fpgaflow.emulation.project import load_project

    def text(name, file):
        return (converted[name][0] / "firmware" / file).read_text()

    assert "nnet::zeropad2d_cl" in text("cnn_stream", "myproject.cpp")
    assert "nnet::zeropad2d_cl" not in text("cnn_parallel", "myproject.cpp")  # io_parallel pads in its buffer
    assert "nnet::resource" in text("cnn_resource", "parameters.h")
    assert "nnet::clone_stream" in text("resnet_stream", "myproject.cpp")
    assert "nnet::add" in text("resnet_parallel_rnd_sat", "myproject.cpp")
    assert "ap_fixed<10,4,AP_RND,AP_SAT,0>" in text("resnet_parallel_rnd_sat", "defines.h")
    for needed in ("nnet::conv_1d_cl", "nnet::normalize", "nnet::pooling1d_cl", "nnet::add"):
        assert needed in text("others_parallel", "myproject.cpp"), needed
    assert "nnet::Average" in text("others_stream", "parameters.h")
    paths = {name: load_project(converted[name][0]).paths for name in CONFIGS}
    assert paths["cnn_saturating"]["conv1"] == "int64 (products are rounded to the accumulator)"
    assert paths["cnn_saturating"]["conv2"] == "int64 (the accumulator may saturate: added in the C loop's order)"
    for name in ("cnn_parallel", "cnn_stream", "cnn_resource", "resnet_stream", "resnet_stream_resource",
                 "others_parallel", "others_stream"):
        assert set(paths[name].values()) == {"float64"}, (name, paths[name])
