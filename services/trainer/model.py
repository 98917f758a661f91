"""The Keras network of the spec. Layer names are part of the API: per-layer HLS overrides use them."""

from __future__ import annotations

import keras

from fpgaflow.spec import ModelSpec

INPUT_NAME = "features"  # hls4ml reserves the name "input"
OUTPUT_NAME = "probabilities"


def build_mlp(spec: ModelSpec, n_inputs: int, n_classes: int) -> keras.Model:
    """Dense layers fc1..fcN with activations, then output (logits) and softmax: the hls4ml jet tagger's shape."""
    regularizer = keras.regularizers.l1(spec.l1) if spec.l1 > 0 else None
    names = iter(spec.layer_names())
    inputs = keras.Input((n_inputs,), name=INPUT_NAME)
    x = inputs
    for width in spec.layers:
        x = keras.layers.Dense(width, name=next(names), kernel_initializer="lecun_uniform", kernel_regularizer=regularizer)(x)
        x = keras.layers.Activation(spec.activation, name=next(names))(x)
    x = keras.layers.Dense(n_classes, name=next(names), kernel_initializer="lecun_uniform", kernel_regularizer=regularizer)(x)
    outputs = keras.layers.Activation("softmax", name=next(names))(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_model(spec: ModelSpec, n_inputs: int, n_classes: int) -> keras.Model:
    if spec.type == "mlp":
        return build_mlp(spec, n_inputs, n_classes)
    raise ValueError(f"unknown model type {spec.type!r}")
