"""The model types of the spec: exact layer names, a short training, save and reload with the same predictions,
the binarized layers, transfer learning with a frozen featurizer, and the user's .keras file."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from fpgaflow.errors import SpecError
from fpgaflow.keras_model import BinaryDense, SignActivation
from fpgaflow.preprocess import Scaler
from fpgaflow.spec import DatasetSpec, ModelSpec
from fpgaflow.trial import INPUT_NAME
from fpgaflow_trainer.datasets import load_dataset
from fpgaflow_trainer.model import (
    ModelFileError,
    build_model,
    featurizer_layers,
    model_input,
)

SPECS = {
    "mlp": ModelSpec(type="mlp", layers=[32, 16]),
    "cnn": ModelSpec(type="cnn", layers=[16], filters=[4, 8]),
    "resnet": ModelSpec(type="resnet", layers=[16], filters=[4, 8]),
    "binary": ModelSpec(type="binary", layers=[64, 32]),
}


@pytest.fixture(scope="module")
def digits():
    data = load_dataset(DatasetSpec(name="digits", seed=0))
    scaler = Scaler.fit(data.x_train, data.features)
    return data, scaler.apply(data.x_train), scaler.apply(data.x_test)


@pytest.fixture(scope="module")
def jets():
    data = load_dataset(DatasetSpec(name="jets", samples=3000, seed=0))
    scaler = Scaler.fit(data.x_train, data.features)
    return data, scaler.apply(data.x_train), scaler.apply(data.x_test)


def fit(model, x, y, epochs=1, learning_rate=3e-3):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(model_input(model, x), y, epochs=epochs, batch_size=64, verbose=0)
    return model


def accuracy(model, x, y) -> float:
    return float((model.predict(model_input(model, x), verbose=0).argmax(axis=1) == y).mean())


@pytest.mark.parametrize("kind", list(SPECS))
def test_each_type_builds_exactly_the_spec_layer_names(kind):
    spec = SPECS[kind]
    shape = (16,) if kind == "mlp" else (8, 8, 1)
    model = build_model(spec, shape, 5)
    assert model.layers[0].name == INPUT_NAME
    assert [layer.name for layer in model.layers[1:]] == spec.layer_names()
    flat = kind in ("mlp", "binary")
    assert tuple(model.inputs[0].shape[1:]) == ((int(np.prod(shape)),) if flat else shape)
    assert tuple(model.outputs[0].shape[1:]) == (5,)


def test_convolutional_types_refuse_what_is_not_an_image():
    with pytest.raises(SpecError, match=r"model.type: cnn needs images .* shape \(16,\)"):
        build_model(SPECS["cnn"], (16,), 5)
    with pytest.raises(SpecError, match=r"model.filters: 4 blocks each halve the image, too many for 8x8 images; use at most 3"):
        build_model(ModelSpec(type="resnet", filters=[4, 4, 4, 4]), (8, 8, 1), 10)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SPECS))
def test_each_type_trains_saves_and_reloads(kind, digits, jets, tmp_path):
    data, x_train, x_test = jets if kind == "mlp" else digits
    keras.utils.set_random_seed(0)
    model = fit(build_model(SPECS[kind], data.shape, len(data.classes)), x_train, data.y_train, epochs=2)
    assert accuracy(model, x_test, data.y_test) > 2.0 / len(data.classes)  # learnt something in 2 epochs
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    assert [layer.name for layer in again.layers[1:]] == SPECS[kind].layer_names()
    np.testing.assert_array_equal(again.predict(model_input(again, x_test), verbose=0),
                                  model.predict(model_input(model, x_test), verbose=0))


@pytest.mark.slow
def test_binary_mlp_is_binary_and_learns_digits(digits):
    data, x_train, x_test = digits
    keras.utils.set_random_seed(1)
    model = fit(build_model(SPECS["binary"], data.shape, 10), x_train, data.y_train, epochs=5)
    assert accuracy(model, x_test, data.y_test) > 0.6  # chance is 0.1
    x = model_input(model, x_test[:32])
    fc1 = model.get_layer("fc1")
    assert set(np.unique(fc1.binary_kernel())) == {-1.0, 1.0}
    thresholds = keras.ops.convert_to_numpy(model.get_layer("binarize").thresholds)
    binarized = np.where(x >= thresholds, 1.0, -1.0)  # LFC's binarized inputs
    np.testing.assert_allclose(keras.Model(model.inputs, fc1.output).predict(x, verbose=0),
                               binarized @ fc1.binary_kernel(), rtol=1e-5, atol=1e-4)  # the +-1 kernel
    signs = keras.Model(model.inputs, model.get_layer("sign1").output).predict(x, verbose=0)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    assert np.abs(keras.ops.convert_to_numpy(fc1.kernel)).max() <= 1.0  # latent weights clipped


def test_sign_has_a_clipped_straight_through_gradient():
    x = tf.constant([-2.0, -0.5, 0.0, 0.7, 1.5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = SignActivation()(x)
    np.testing.assert_array_equal(y.numpy(), [-1, -1, 1, 1, 1])
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 0])
    layer = BinaryDense(2, use_bias=False)
    inputs = tf.constant([[1.0, -2.0, 0.5]])
    with tf.GradientTape() as tape:
        out = layer(inputs)
    grad = tape.gradient(out, layer.kernel).numpy()
    np.testing.assert_allclose(grad, np.repeat(inputs.numpy().T, 2, axis=1))  # straight through to the latent kernel


@pytest.mark.slow
def test_resnet_transfer_freezes_the_featurizer_and_trains_the_head(digits, tmp_path):
    data, x_train, _ = digits
    keras.utils.set_random_seed(2)
    source = fit(build_model(SPECS["resnet"], data.shape, 10), x_train, data.y_train)
    source.save(tmp_path / "source.keras")
    loaded = {lay.name: [w.copy() for w in lay.get_weights()] for lay in featurizer_layers(source)}

    spec = SPECS["resnet"].model_copy(update={"featurizer": str(tmp_path / "source.keras"), "freeze_featurizer": True})
    model = build_model(spec, data.shape, 10)
    head = {name: [w.copy() for w in model.get_layer(name).get_weights()] for name in ("fc1", "output")}
    assert all(not lay.trainable for lay in featurizer_layers(model)) and model.get_layer("fc1").trainable
    fit(model, x_train[:512], data.y_train[:512])
    for layer in featurizer_layers(model):
        for now, before in zip(layer.get_weights(), loaded[layer.name], strict=True):
            assert now.tobytes() == before.tobytes(), layer.name
    for name, before in head.items():
        assert not np.array_equal(model.get_layer(name).get_weights()[0], before[0]), name

    unfrozen = build_model(spec.model_copy(update={"freeze_featurizer": False}), data.shape, 10)
    np.testing.assert_array_equal(unfrozen.get_layer("feat_conv1a").get_weights()[0], loaded["feat_conv1a"][0])
    fit(unfrozen, x_train[:512], data.y_train[:512])
    assert not np.array_equal(unfrozen.get_layer("feat_conv1a").get_weights()[0], loaded["feat_conv1a"][0])


def test_featurizer_mismatches_are_named(tmp_path):
    build_model(SPECS["resnet"], (8, 8, 1), 10).save(tmp_path / "resnet.keras")
    build_model(SPECS["cnn"], (8, 8, 1), 10).save(tmp_path / "cnn.keras")
    wider = ModelSpec(type="resnet", layers=[16], filters=[6, 8], featurizer=str(tmp_path / "resnet.keras"))
    with pytest.raises(ModelFileError, match=r"layer 'feat_conv1a' has weights of shapes \[\(3, 3, 1, 4\), \(4,\)\] "
                                             r"in the file, this model needs \[\(3, 3, 1, 6\), \(6,\)\]"):
        build_model(wider, (8, 8, 1), 10)
    from_cnn = wider.model_copy(update={"featurizer": str(tmp_path / "cnn.keras")})
    with pytest.raises(ModelFileError, match=r"'cnn' has no layer 'feat_conv1a'"):
        build_model(from_cnn, (8, 8, 1), 10)
    with pytest.raises(ModelFileError, match=r"model.featurizer: .*missing\.keras does not exist"):
        build_model(wider.model_copy(update={"featurizer": str(tmp_path / "missing.keras")}), (8, 8, 1), 10)
    with pytest.raises(SpecError, match="model.freezeFeaturizer: needs model.featurizer"):
        build_model(ModelSpec(type="resnet", freeze_featurizer=True), (8, 8, 1), 10)


@pytest.mark.slow
def test_keras_type_loads_the_users_file_and_checks_it(digits, tmp_path):
    data, x_train, x_test = digits
    inputs = keras.Input((64,), name="pixels")
    outputs = keras.layers.Dense(10, activation="softmax", name="out")(keras.layers.Dense(24, activation="relu")(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "user.keras")
    spec = ModelSpec(type="keras", path=str(tmp_path / "user.keras"))
    model = build_model(spec, data.shape, 10)  # a flat input of 8*8*1 values takes the digits
    assert model.get_layer("out").units == 10
    fit(model, x_train, data.y_train, epochs=2, learning_rate=1e-2)
    assert accuracy(model, x_test, data.y_test) > 0.5
    with pytest.raises(ModelFileError, match=r"user\.keras has outputs of shape \(10,\), but the data set has 5 classes"):
        build_model(spec, data.shape, 5)
    with pytest.raises(ModelFileError, match=r"user\.keras takes inputs of shape \(64,\), but the data set's samples "
                                             r"have shape \(16,\)"):
        build_model(spec, (16,), 10)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match=r"model.path: .*broken\.keras is not a loadable \.keras model"):
        build_model(spec.model_copy(update={"path": str(tmp_path / "broken.keras")}), data.shape, 10)
