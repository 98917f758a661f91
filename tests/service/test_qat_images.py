"""Quantization-aware training of image models: fpgaflow's cnn and resnet, trained in float on simulated jet
images, rebuilt from HGQ2 layers (QConv2D, QAdd, QDense, QSoftmax) at the spec's HLS types, fine-tuned,
saved, reloaded and converted by hls4ml; its emulation must reproduce the QAT model's outputs bit for bit,
as the MLP's does (test_qat.py), and fpgaflow's vectorized emulator must give hls4ml's bits."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.spec import DatasetSpec, ExperimentSpec

pytestmark = pytest.mark.slow

IMAGES = DatasetSpec(name="jet-images", samples=2000, image_size=16, align_images=True, seed=42)
CASES = {
    "cnn-stream": {"model": {"type": "cnn", "filters": [4, 8], "layers": [16]},
                   "hls": {"precision": "ap_fixed<16,6>", "ioType": "io_stream", "layers": {
                       "conv2": {"precision": {"weight": "ap_fixed<8,2,AP_RND,AP_SAT>",
                                               "result": "ap_fixed<12,4,AP_RND_CONV,AP_SAT>"}}}}},
    "resnet-parallel": {"model": {"type": "resnet", "filters": [4], "layers": [16]},
                        "hls": {"precision": "ap_fixed<14,5,AP_RND,AP_SAT>", "layers": {
                            "feat_add1": {"precision": {"result": "ap_fixed<10,4,AP_RND,AP_SAT>"}}}}},
    "resnet-stream": {"model": {"type": "resnet", "filters": [4], "layers": [16]},
                      "hls": {"precision": "ap_fixed<16,6>", "ioType": "io_stream"}},
}


@pytest.fixture(scope="module")
def images():
    from fpgaflow.preprocess import Scaler
    from fpgaflow_trainer.datasets import load_dataset

    data = load_dataset(IMAGES)
    scaler = Scaler.fit(data.x_train, data.features)
    rng = np.random.default_rng(9)
    noise = rng.normal(size=(2000, *data.shape)) * rng.choice([0.5, 4.0, 40.0], size=(2000, 1, 1, 1))
    x = np.concatenate([scaler.apply(data.x_train), scaler.apply(data.x_test), noise]).astype(np.float32)
    return data, scaler.apply(data.x_train).astype(np.float32), np.ascontiguousarray(x)


@pytest.fixture(scope="module", params=list(CASES))
def converted(request, images, tmp_path_factory):
    """Float fit (one epoch), QAT fine-tuning (one epoch), save, reload, hls4ml conversion, compile."""
    import hls4ml
    import keras

    from fpgaflow import keras_model
    from fpgaflow_converter.config import hls_config
    from fpgaflow_trainer import qat
    from fpgaflow_trainer.model import build_model

    data, x_train, x = images
    spec = ExperimentSpec.model_validate({**CASES[request.param], "quantize": {"method": "qat", "epochs": 1}})
    qat.check_spec(spec)
    keras.utils.set_random_seed(4)
    float_model = build_model(spec.model, data.shape, 2)
    float_model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    float_model.fit(x_train, data.y_train, epochs=1, batch_size=64, verbose=0)
    model = qat.to_qat(float_model, spec)
    model.fit(x_train, data.y_train, epochs=1, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp(request.param)
    model.save(folder / "model.keras")
    reloaded = keras_model.load_model(folder / "model.keras")
    base = hls4ml.utils.config_from_keras_model(reloaded, granularity="name", default_precision=spec.hls.precision,
                                                backend="Vitis")
    hls_model = hls4ml.converters.convert_from_keras_model(
        reloaded, hls_config=hls_config(base, spec.hls, n_classes=2, quantized=True),
        output_dir=str(folder / "hls4ml_prj"), backend="Vitis", io_type=spec.hls.io_type)
    hls_model.compile()
    return {"name": request.param, "float": float_model, "reloaded": reloaded, "folder": folder,
            "emulated": np.asarray(hls_model.predict(x)).reshape(len(x), -1)}


def test_the_emulation_reproduces_the_qat_image_model_bit_exactly(converted, images):
    data, _, x = images
    reference = converted["reloaded"].predict(x, batch_size=512, verbose=0)
    emulated = converted["emulated"]
    assert np.ptp(reference, axis=0).max() > 0.1
    differ = (emulated != reference).any(axis=1)
    assert not differ.any(), f"{converted['name']}: {differ.sum()} of {len(x)} images differ"
    n_test = len(data.y_train), len(data.y_train) + len(data.y_test)
    accuracy = (reference[n_test[0]:n_test[1]].argmax(axis=1) == data.y_test).mean()
    assert accuracy > 0.7, f"{converted['name']}: QAT accuracy {accuracy:.3f} on the test images"


def test_the_vectorized_emulator_matches_hls4ml_on_the_qat_image_model(converted, images):
    from fpgaflow.emulation.project import load_project

    _, _, x = images
    fast = load_project(converted["folder"] / "hls4ml_prj")
    assert set(fast.paths.values()) == {"float64"}, fast.paths
    assert np.array_equal(fast.predict(x).view(np.uint32), converted["emulated"].view(np.uint32))


def test_the_qat_twin_keeps_the_graph_and_quantizes_the_shared_input_once(converted):
    from fpgaflow.keras_model import is_qat

    names = [layer.name for layer in converted["reloaded"].layers]
    float_names = [layer.name for layer in converted["float"].layers]
    assert is_qat(converted["reloaded"])
    if converted["name"].startswith("resnet"):  # the image feeds the branch and the projection: one quantizer
        assert names == [float_names[0], f"{float_names[0]}_q", *float_names[1:]]
        add = converted["reloaded"].get_layer("feat_add1")
        assert type(add).__name__ == "QAdd" and not add.enable_iq and add.enable_oq
    else:
        assert names == float_names
