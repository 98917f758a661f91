"""The last step of the Brainwave recipe (``quantize.retrainHead``): only the classifier head retrained on what
the fixed-point featurizer computes.

The featurizer (the ``feat_*`` layers) stays as it was fine-tuned in fixed point. Its outputs on the training set
are taken from the converted firmware's bit-exact emulation (the values the head's first layer reads in the
firmware), and the head (the layers after the featurizer: HGQ2 layers at their HLS types) is trained on them
alone, starting from its weights. The new head with the unchanged featurizer is the retrained model, which the
convert stage converts and packages as version 2 of the trial's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from fpgaflow import keras_model
from fpgaflow.errors import StageError
from fpgaflow.spec import FEATURIZER_PREFIX, RetrainHeadSpec


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The classifier head: the layers after the last featurizer layer, which must follow one another."""
    names = [layer.name for layer in model.layers]
    featurizer = [i for i, name in enumerate(names) if name.startswith(FEATURIZER_PREFIX)]
    if not featurizer:
        raise StageError(f"quantize.retrainHead needs a featurizer (layers named {FEATURIZER_PREFIX}*); "
                         f"{model.name} has {', '.join(names)}")
    head = model.layers[featurizer[-1] + 1:]
    for before, layer in zip([model.layers[featurizer[-1]], *head], head, strict=False):
        inbound = keras_model.parents(layer)
        if inbound != [before.name]:
            raise StageError(f"quantize.retrainHead retrains a head of layers that follow one another; {layer.name} "
                             f"reads {', '.join(inbound)}")
    if not head:
        raise StageError(f"{model.name} has no layers after its featurizer to retrain")
    return head


def head_network(model: keras.Model, n_features: int) -> keras.Model:
    """The model's head on its own, taking the featurizer's flat outputs: copies of its layers (quantizers at the
    same types) with its weights."""
    with keras_model.exact_arithmetic():
        inputs = keras.Input((n_features,), name=f"{FEATURIZER_PREFIX}outputs")
        x = inputs
        for layer in head_layers(model):
            twin = type(layer).from_config(layer.get_config())
            x = twin(x)
            twin.set_weights(layer.get_weights())
        return keras.Model(inputs, x, name=f"{model.name}_head")


@dataclass(frozen=True)
class Retrained:
    """The retrained model and how its head's training went."""

    model: keras.Model
    history: dict[str, list[float]]
    accuracy_before: float  # the head as fine-tuned, on the firmware's featurizer outputs of the training set
    accuracy_after: float


def retrain_head(model_path: Path, features: np.ndarray, y: np.ndarray, settings: RetrainHeadSpec,
                 seed: int) -> Retrained:
    """The model of ``model_path`` with its head trained on ``features`` (the firmware's featurizer outputs of the
    training set, (n, values)) and labels ``y``: Adam at the spec's learning rate, sparse categorical
    cross-entropy, the last tenth of the samples validating."""
    model = keras_model.load_model(model_path)
    head = head_network(model, features.shape[1])
    keras.utils.set_random_seed(seed)
    with keras_model.exact_arithmetic():
        head.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        before = _accuracy(head, features, y)
        fit = head.fit(features, y, epochs=settings.epochs, batch_size=settings.batch_size, validation_split=0.1,
                       verbose=0)
        after = _accuracy(head, features, y)
    for layer in head.layers[1:]:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    return Retrained(model, history, before, after)


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x, batch_size=4096, verbose=0).argmax(axis=1) == y).mean())
