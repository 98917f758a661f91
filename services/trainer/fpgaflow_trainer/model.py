"""The Keras network of the spec. Layer names are part of the API: per-layer HLS overrides use them, and every
type builds exactly ``ModelSpec.layer_names()`` in that order.

Input shapes: ``mlp`` and ``binary`` take flat samples (``prod(shape)`` values: an image is flattened, row by
row); ``cnn`` and ``resnet`` take images (rows, cols, channels); ``keras`` takes what its file says.
``model_input`` reshapes a data set's ``x`` to what a built model takes.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from fpgaflow.errors import SpecError, StageError
from fpgaflow.keras_model import BinarizeInput, BinaryDense, SignActivation
from fpgaflow.spec import FEATURIZER_PREFIX, ModelSpec
from fpgaflow.trial import INPUT_NAME


class ModelFileError(StageError):
    """A .keras file (model.path, model.featurizer) that is missing, unreadable or does not fit the data set."""

    reason = "InvalidModelFile"


# ------------------------------------------------------------------------------------------- builders


def _regularizer(spec: ModelSpec):
    return keras.regularizers.l1(spec.l1) if spec.l1 > 0 else None


def _dense_head(spec: ModelSpec, x, names, n_classes: int):
    """fc{i} + {activation}{i} per entry of layers, then output (logits) and softmax."""
    for width in spec.layers:
        x = keras.layers.Dense(width, name=next(names), kernel_initializer="lecun_uniform", kernel_regularizer=_regularizer(spec))(x)
        x = keras.layers.Activation(spec.activation, name=next(names))(x)
    x = keras.layers.Dense(n_classes, name=next(names), kernel_initializer="lecun_uniform", kernel_regularizer=_regularizer(spec))(x)
    return keras.layers.Activation("softmax", name=next(names))(x)


def _flat_input(input_shape: tuple[int, ...]):
    return keras.Input((math.prod(input_shape),), name=INPUT_NAME)


def _image_input(spec: ModelSpec, input_shape: tuple[int, ...]):
    """The Input of a convolutional type; refuses data that is not an image or too small for its pooling."""
    if len(input_shape) == 2:
        input_shape = (*input_shape, 1)
    if len(input_shape) != 3:
        raise SpecError([("model.type", f"{spec.type} needs images (rows, cols, channels), but the data set's samples "
                                        f"have shape {tuple(input_shape)}; use mlp or binary for it")])
    smallest = min(input_shape[:2]) // 2 ** len(spec.filters)
    if smallest < 1:
        raise SpecError([("model.filters", f"{len(spec.filters)} blocks each halve the image, too many for "
                                           f"{input_shape[0]}x{input_shape[1]} images; use at most "
                                           f"{int(math.log2(min(input_shape[:2])))}")])
    return keras.Input(tuple(input_shape), name=INPUT_NAME)


def build_mlp(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Dense layers fc1..fcN with activations, then output (logits) and softmax: the hls4ml jet tagger's shape."""
    inputs = _flat_input(input_shape)
    return keras.Model(inputs, _dense_head(spec, inputs, iter(spec.layer_names()), n_classes), name="mlp")


def build_cnn(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Per entry of filters: conv (3x3, same padding), activation, 2x2 max pooling; flatten; the dense head."""
    names = iter(spec.layer_names())
    inputs = x = _image_input(spec, input_shape)
    for channels in spec.filters:
        x = keras.layers.Conv2D(channels, 3, padding="same", name=next(names), kernel_regularizer=_regularizer(spec))(x)
        x = keras.layers.Activation(spec.activation, name=next(names))(x)
        x = keras.layers.MaxPooling2D(2, name=next(names))(x)
    x = keras.layers.Flatten(name=next(names))(x)
    return keras.Model(inputs, _dense_head(spec, x, names, n_classes), name="cnn")


def build_resnet(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Featurizer: per entry of filters a residual block (two 3x3 convs beside a 1x1 projection, added, activated,
    pooled), all named feat_*; then the dense classifier head. ``featurizer`` loads its weights, and
    ``freezeFeaturizer`` keeps them fixed so that only the head trains."""
    names = iter(spec.layer_names())
    inputs = x = _image_input(spec, input_shape)
    for channels in spec.filters:
        conv_a, act_a, conv_b, skip, add, act, pool = (next(names) for _ in range(7))
        branch = keras.layers.Conv2D(channels, 3, padding="same", name=conv_a, kernel_regularizer=_regularizer(spec))(x)
        branch = keras.layers.Activation(spec.activation, name=act_a)(branch)
        branch = keras.layers.Conv2D(channels, 3, padding="same", name=conv_b, kernel_regularizer=_regularizer(spec))(branch)
        shortcut = keras.layers.Conv2D(channels, 1, name=skip, kernel_regularizer=_regularizer(spec))(x)
        x = keras.layers.Add(name=add)([branch, shortcut])
        x = keras.layers.Activation(spec.activation, name=act)(x)
        x = keras.layers.MaxPooling2D(2, name=pool)(x)
    x = keras.layers.Flatten(name=next(names))(x)
    model = keras.Model(inputs, _dense_head(spec, x, names, n_classes), name="resnet")
    if spec.featurizer is not None:
        transfer_featurizer(model, load_keras_file(spec.featurizer, "model.featurizer"))
    elif spec.freeze_featurizer:
        raise SpecError([("model.freezeFeaturizer", "needs model.featurizer: without it the frozen featurizer would "
                                                    "keep its random initial weights")])
    if spec.freeze_featurizer:
        for layer in featurizer_layers(model):
            layer.trainable = False
    return model


def build_binary(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """A binarized MLP shaped like BNN-PYNQ's LFC: binarize (each input +1 where its raw value is at least the
    input threshold, as LFC binarizes pixels; set by ``prepare_binary_input``), then per entry of layers fc{i}
    (+-1 weights, no bias), bn{i}, sign{i} (+-1 activations); then output (+-1 weights with a bias) and softmax.
    Takes flat samples."""
    names = iter(spec.layer_names())
    inputs = _flat_input(input_shape)
    x = BinarizeInput(name=next(names))(inputs)
    for width in spec.layers:
        x = BinaryDense(width, use_bias=False, name=next(names))(x)
        x = keras.layers.BatchNormalization(name=next(names))(x)
        x = SignActivation(name=next(names))(x)
    x = BinaryDense(n_classes, name=next(names))(x)
    outputs = keras.layers.Activation("softmax", name=next(names))(x)
    return keras.Model(inputs, outputs, name="binary")


def input_threshold(spec: ModelSpec, x_train: np.ndarray) -> float:
    """The raw value at which a binary model's input becomes +1: model.inputThreshold, else the middle of the
    training set's value range (127.5 for 0..255 pixels: LFC's rule, pixel / 255 * 2 - 1 >= 0)."""
    if spec.input_threshold is not None:
        return float(spec.input_threshold)
    return float((np.min(x_train) + np.max(x_train)) / 2)


def prepare_binary_input(model: keras.Model, raw_threshold: float, mean: np.ndarray, scale: np.ndarray) -> None:
    """Sets a binary model's input binarization to ``raw_threshold``, in the standardized units of the scaler
    (``mean``, ``scale``) that feeds the model."""
    layer = next((lay for lay in model.layers if isinstance(lay, BinarizeInput)), None)
    if layer is None:
        raise StageError(f"model {model.name!r} has no BinarizeInput layer to set")
    layer.raw_threshold = float(raw_threshold)
    layer.set_thresholds(mean, scale)


# ------------------------------------------------------------------------------------ files and shapes


def load_keras_file(path: str | Path, field: str) -> keras.Model:
    """A .keras model (uncompiled); a missing or unreadable file raises ModelFileError naming ``field``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{field}: {path} does not exist (it is read where the trainer runs)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises ValueError, OSError, zipfile errors, TypeError for unknown layers
        raise ModelFileError(f"{field}: {path} is not a loadable .keras model: {type(exc).__name__}: {exc}") from exc


def featurizer_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.name.startswith(FEATURIZER_PREFIX)]


def transfer_featurizer(model: keras.Model, source: keras.Model) -> list[str]:
    """Copy the weights of every feat_* layer of ``model`` from the layer of the same name in ``source``; the
    shapes must match. Returns the names of the layers whose weights were copied."""
    copied = []
    for layer in featurizer_layers(model):
        if not layer.weights:
            continue
        try:
            donor = source.get_layer(layer.name)
        except ValueError:
            raise ModelFileError(f"model.featurizer: {source.name!r} has no layer {layer.name!r} to take weights from; "
                                 f"its feat_ layers are {', '.join(lay.name for lay in featurizer_layers(source)) or 'none'}"
                                 ) from None
        ours = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(w.shape) for w in donor.weights]
        if ours != theirs:
            raise ModelFileError(f"model.featurizer: layer {layer.name!r} has weights of shapes {theirs} in the file, "
                                 f"this model needs {ours}")
        layer.set_weights(donor.get_weights())
        copied.append(layer.name)
    return copied


def _fits(model_shape: tuple, data_shape: tuple) -> bool:
    """A model input of ``model_shape`` takes samples of ``data_shape``: the same shape up to dimensions of size 1,
    or a flat input of the same number of values."""
    if None in model_shape:
        return False
    squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    return squeeze(model_shape) == squeeze(data_shape) or (
        len(model_shape) == 1 and model_shape[0] == math.prod(data_shape)
    )


def load_user_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """The user's .keras file (type keras), checked against the data set: one input that takes its samples and
    one output of n_classes probabilities. The trainer compiles it anew."""
    model = load_keras_file(spec.path, "model.path")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(f"model.path: {spec.path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                             f"fpgaflow trains models with one of each")
    model_shape = tuple(model.inputs[0].shape[1:])
    if not _fits(model_shape, tuple(input_shape)):
        raise ModelFileError(f"model.path: {spec.path} takes inputs of shape {model_shape}, but the data set's samples "
                             f"have shape {tuple(input_shape)} ({math.prod(input_shape)} values)")
    outputs = model.outputs[0].shape[-1]
    if len(model.outputs[0].shape) != 2 or outputs != n_classes:
        raise ModelFileError(f"model.path: {spec.path} has outputs of shape {tuple(model.outputs[0].shape[1:])}, but the "
                             f"data set has {n_classes} classes: the model needs ({n_classes},)")
    return model


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn, "resnet": build_resnet, "binary": build_binary, "keras": load_user_model}


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """The model of the spec for samples of ``input_shape`` (the data set's per-sample shape) and n_classes."""
    if spec.type not in BUILDERS:
        raise ValueError(f"unknown model type {spec.type!r}")
    return BUILDERS[spec.type](spec, tuple(int(d) for d in input_shape), n_classes)


def model_input(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """``x`` (n, *sample shape) reshaped to the samples the model takes (flattened for mlp and binary)."""
    shape = tuple(model.inputs[0].shape[1:])
    x = np.asarray(x)
    if x.shape[1:] == shape:
        return x
    if math.prod(x.shape[1:]) != math.prod(shape):
        raise StageError(f"the model takes samples of shape {shape}, the data has {x.shape[1:]}")
    return x.reshape((len(x), *shape))
