"""Quantization-aware fine-tuning: a float MLP, its HGQ2 twin fine-tuned at the spec's HLS types, saved,
reloaded and converted by hls4ml 1.3, whose emulation must reproduce the QAT model's outputs bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaflow.errors import SpecError
from fpgaflow.spec import ExperimentSpec

SPEC = {
    "model": {"layers": [16, 8]},
    "train": {"epochs": 2, "batchSize": 256, "pruning": {"targetSparsity": 0.5, "beginEpoch": 0, "endEpoch": 1}},
    "quantize": {"method": "qat", "epochs": 1, "learningRate": 1e-3},
    "hls": {
        # Wide enough that float32 arithmetic would round products and sums (the QAT model computes in float64).
        "precision": "ap_fixed<24,8>",
        "layers": {
            "fc1": {"precision": {"result": "ap_fixed<20,7,AP_RND_CONV,AP_SAT>"}},
            "fc2": {"precision": {"weight": "ap_fixed<8,2,AP_RND,AP_SAT>", "bias": "ap_fixed<10,3>"}},
            "relu1": {"precision": {"result": "ap_ufixed<10,4,AP_RND,AP_SAT>"}},
        },
    },
}
SAMPLES = 4000


def test_hls_types_map_to_hgq_parameters():
    from fpgaflow_trainer.qat import hls_type_kif

    assert hls_type_kif("ap_fixed<16,6>") == {"k0": 1, "i0": 5, "f0": 10, "round_mode": "TRN", "overflow_mode": "WRAP"}
    assert hls_type_kif("ap_ufixed<10,4,AP_RND,AP_SAT>") == {"k0": 0, "i0": 4, "f0": 6, "round_mode": "RND",
                                                             "overflow_mode": "SAT"}
    assert hls_type_kif("ap_int<8>") == {"k0": 1, "i0": 7, "f0": 0, "round_mode": "TRN", "overflow_mode": "WRAP"}
    with pytest.raises(SpecError, match="AP_RND_ZERO"):
        hls_type_kif("ap_fixed<8,3,AP_RND_ZERO>")
    with pytest.raises(SpecError, match="WRAP_SM"):
        hls_type_kif("ap_fixed<8,3,AP_RND,AP_WRAP_SM>")


def test_a_qat_spec_that_cannot_be_built_is_refused_before_training():
    from fpgaflow_trainer.qat import check_spec

    check_spec(ExperimentSpec.model_validate(SPEC))
    check_spec(ExperimentSpec.model_validate({"hls": {"precision": "ap_fixed<8,3,AP_RND_ZERO>"}}))  # ptq: hls4ml's
    with pytest.raises(SpecError, match=r"hls.layers.fc1.precision.weight: .*AP_RND_INF"):
        check_spec(ExperimentSpec.model_validate(
            {"quantize": {"method": "qat"}, "hls": {"layers": {"fc1": {"precision": {"weight": "ap_fixed<8,3,AP_RND_INF>"}}}}}))
    with pytest.raises(SpecError, match="not a tanh mlp"):
        check_spec(ExperimentSpec.model_validate({"quantize": {"method": "qat"}, "model": {"activation": "tanh"}}))


def test_qat_refuses_activations_that_hls4ml_tabulates():
    from fpgaflow_trainer.model import build_model
    from fpgaflow_trainer.qat import to_qat

    spec = ExperimentSpec.model_validate({"model": {"layers": [4], "activation": "tanh"}})
    with pytest.raises(SpecError, match="relu activations, not tanh"):
        to_qat(build_model(spec.model, (16,), 5), spec)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Float fit (2 epochs, pruned to 50 % in the second), QAT fine-tuning (1 epoch), save, reload, hls4ml conversion, compile."""
    import hls4ml
    import keras

    from fpgaflow import keras_model
    from fpgaflow_converter.config import hls_config
    from fpgaflow_trainer import qat
    from fpgaflow_trainer.model import build_model
    from fpgaflow_trainer.pruning import Pruner
    from tests.synthetic_jets import synthetic_jets

    spec = ExperimentSpec.model_validate(SPEC)
    x, y = synthetic_jets(SAMPLES, seed=7)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    keras.utils.set_random_seed(7)
    float_model = build_model(spec.model, (16,), 5)
    float_model.compile(optimizer=keras.optimizers.Adam(spec.train.learning_rate), loss="sparse_categorical_crossentropy")
    pruner = Pruner(spec.train.pruning, spec.train.epochs)
    float_model.fit(x, y, epochs=spec.train.epochs, batch_size=256, callbacks=[pruner], verbose=0)

    model = qat.to_qat(float_model, spec)
    float_epochs = spec.train.epochs
    history = model.fit(x, y, epochs=float_epochs + spec.quantize.epochs, initial_epoch=float_epochs, batch_size=256,
                        callbacks=[pruner], verbose=0)
    folder = tmp_path_factory.mktemp("qat")
    model.save(folder / "model.keras")
    reloaded = keras_model.load_model(folder / "model.keras")

    base = hls4ml.utils.config_from_keras_model(reloaded, granularity="name", default_precision=spec.hls.precision,
                                                backend="Vitis")
    base["LayerName"]["output"]["Trace"] = True
    hls_model = hls4ml.converters.convert_from_keras_model(
        reloaded, hls_config=hls_config(base, spec.hls, n_classes=5, quantized=True), output_dir=str(folder / "hls4ml_prj"),
        backend="Vitis", io_type="io_parallel",
    )
    hls_model.compile()
    emulated = np.asarray(hls_model.predict(np.ascontiguousarray(x))).reshape(len(x), -1)
    _, trace = hls_model.trace(np.ascontiguousarray(x))  # recompiles with tracing
    return {"spec": spec, "x": x, "y": y, "float": float_model, "model": model, "reloaded": reloaded,
            "hls": hls_model, "emulated": emulated, "logits": trace["output"].reshape(len(x), -1), "history": history.history, "folder": folder}


@pytest.mark.slow
def test_the_emulation_reproduces_the_qat_model_bit_exactly(converted):
    x = converted["x"]
    import keras

    model = converted["reloaded"]
    reference, emulated = model.predict(x, batch_size=1024, verbose=0), converted["emulated"]
    assert np.ptp(reference, axis=0).max() > 0.1  # real, input-dependent probabilities, not a constant
    assert np.array_equal(emulated, reference), (
        f"{(emulated != reference).any(axis=1).sum()} of {len(x)} samples differ, by up to {np.abs(emulated - reference).max()}")
    logits = keras.Model(model.inputs, model.get_layer("output").output).predict(x, batch_size=1024, verbose=0)
    assert np.array_equal(converted["logits"], logits), f"{(converted['logits'] != logits).any(axis=1).sum()} logits differ"
    # The QAT model answers alike whatever the batch size (exact arithmetic), so the agreement is not luck.
    assert np.array_equal(converted["reloaded"].predict(x[:300], batch_size=1, verbose=0), reference[:300])


@pytest.mark.slow
def test_the_vectorized_emulator_matches_hls4ml_on_the_qat_model(converted):
    """Issue 7's acceptance for a QAT model: fpgaflow's vectorized emulator, read from the converted
    project, gives hls4ml's C simulation's bits on 100,000 inputs (jets and random, at scales that
    saturate the quantizers' types), on its fast float64 path."""
    from fpgaflow.emulation.project import load_project
    from tests.synthetic_jets import synthetic_jets

    jets, _ = synthetic_jets(50_000, seed=8)
    rng = np.random.default_rng(8)
    x = np.concatenate([(jets - jets.mean(axis=0)) / jets.std(axis=0),
                        rng.normal(size=(50_000, 16)) * rng.choice([0.5, 2.0, 20.0], size=(50_000, 1))]).astype(np.float32)
    expected = np.asarray(converted["hls"].predict(np.ascontiguousarray(x))).reshape(len(x), -1)
    fast = load_project(converted["folder"] / "hls4ml_prj")
    assert set(fast.paths.values()) == {"float64"}, fast.paths
    got = fast.predict(x)
    assert np.ptp(expected, axis=0).max() > 0.1
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), f"{(got != expected).any(axis=1).sum()} samples differ"


@pytest.mark.slow
def test_the_qat_model_saves_reloads_and_fine_tuned_its_float_weights(converted):
    from fpgaflow.keras_model import is_qat, load_model, saved_is_qat

    model, reloaded, float_model = converted["model"], converted["reloaded"], converted["float"]
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in float_model.layers]
    assert is_qat(reloaded) and not is_qat(float_model) and saved_is_qat(converted["folder"] / "model.keras")
    assert np.array_equal(model.predict(converted["x"], verbose=0), reloaded.predict(converted["x"], verbose=0))
    assert np.isfinite(converted["history"]["loss"]).all()
    # A checkpoint of the QAT phase reloads with its optimizer and trains on (keras_model.load_model, as resume does).
    again = load_model(converted["folder"] / "model.keras")
    assert int(again.optimizer.iterations) == int(model.optimizer.iterations) > 0
    assert np.isfinite(again.fit(converted["x"][:512], converted["y"][:512], epochs=1, verbose=0).history["loss"]).all()
    moved = np.abs(np.asarray(model.get_layer("fc1").kernel) - np.asarray(float_model.get_layer("fc1").kernel)).max()
    assert moved > 0  # fine-tuned, not a copy
    # Accuracy of the fixed-point model stays close to the float one's (both trained briefly).
    float_accuracy = (float_model.predict(converted["x"], verbose=0).argmax(1) == converted["y"]).mean()
    qat_accuracy = (reloaded.predict(converted["x"], verbose=0).argmax(1) == converted["y"]).mean()
    assert qat_accuracy > float_accuracy - 0.1


@pytest.mark.slow
def test_per_layer_precisions_reach_the_quantizers_and_stay_fixed(converted):
    import keras

    model = converted["reloaded"]

    def kif(quantizer):
        return tuple(int(np.ravel(keras.ops.convert_to_numpy(v))[0]) for v in quantizer.quantizer.kif)

    fc1, fc2, output = model.get_layer("fc1"), model.get_layer("fc2"), model.get_layer("output")
    assert kif(fc1.kq) == (1, 7, 16) and kif(fc1.iq) == (1, 7, 16)  # hls.precision
    assert kif(fc1.oq) == (1, 6, 13) and fc1.oq.quantizer.round_mode == "RND_CONV"
    assert kif(fc2.kq) == (1, 1, 6) and fc2.kq.quantizer.round_mode == "RND" and fc2.kq.quantizer.overflow_mode == "SAT"
    assert kif(fc2.bq) == (1, 2, 7)
    assert kif(fc2.iq) == (0, 4, 6)  # relu1's result type feeds fc2
    assert kif(output.oq) == (1, 7, 16) and output.oq.quantizer.overflow_mode == "WRAP"
    # The weights the model computes with lie on fc2's weight grid and in its range.
    qkernel = keras.ops.convert_to_numpy(fc2.qkernel)
    assert np.array_equal(qkernel * 64, np.round(qkernel * 64)) and qkernel.min() >= -2 and qkernel.max() < 2
    # hls4ml derived fc2's weight type from the quantizer: at most the 8 bits of the spec.
    assert converted["hls"].graph["fc2"].get_attr("weight_t").precision.width <= 8


@pytest.mark.slow
def test_pruned_zeros_survive_the_qat_phase(converted):
    import keras

    for name in ("fc1", "fc2", "output"):
        kernel = keras.ops.convert_to_numpy(converted["model"].get_layer(name).kernel)
        assert (kernel == 0).sum() == round(0.5 * kernel.size), name
        float_kernel = keras.ops.convert_to_numpy(converted["float"].get_layer(name).kernel)
        assert np.array_equal(kernel == 0, float_kernel == 0), name


@pytest.mark.slow
def test_the_cpu_target_serves_a_qat_model_with_tensorflow_exactly(converted):
    """LiteRT computes in float32: a QAT model's fixed-point arithmetic (float64 here) stays with TensorFlow."""
    from fpgaflow_inference.backends import KerasBackend, cpu_backend

    backend = cpu_backend(converted["folder"] / "model.keras")
    assert isinstance(backend, KerasBackend)
    assert "not LiteRT: a quantization-aware model computes in float64" in backend.description
    x = converted["x"][:64]
    assert np.array_equal(backend.predict(x), converted["reloaded"].predict(x, verbose=0))
