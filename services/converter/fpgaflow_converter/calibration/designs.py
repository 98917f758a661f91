"""A network's layers as the estimate needs them, from a one-line description or from a Keras model's config.

The calibration table (``reports.csv``) describes each synthesized design in one line, e.g.
``input:16 dense:64 relu dense:32 relu dense:5 softmax`` or
``input:32x32x3 conv2d:16,3,1,same relu maxpool2d:2 flatten dense:10 softmax``; ``fpgaflow estimate`` reads
the same layers from a ``.keras`` file's ``config.json``. Both give a list of :class:`Node` with shapes
propagated (channels last), which ``estimate.shapes_from_nodes`` turns into hls4ml's layers.

Tokens (space separated, the first one is ``input:SHAPE``):

- ``dense:N``; ``conv1d:F,K[,S][,same|valid]``; ``conv2d:F,K[,S][,pad]`` (K x K kernel);
  ``dwconv1d:K[,S][,pad]``, ``dwconv2d:K[,S][,pad]`` (depthwise, multiplier 1); ``sepconv1d:F,K[,S][,pad]``,
  ``sepconv2d:F,K[,S][,pad]``
- ``maxpool1d:P[,pad]``, ``avgpool1d``, ``maxpool2d``, ``avgpool2d`` (pool size = stride = P);
  ``gmaxpool1d``, ``gavgpool1d``, ``gmaxpool2d``, ``gavgpool2d``
- ``zeropad1d:P``, ``zeropad2d:P``; ``upsample1d:S``, ``upsample2d:S``; ``flatten``; ``bn``
- activations: ``relu leaky_relu prelu elu selu sigmoid tanh softmax softsign softplus hard_sigmoid
  hard_tanh gelu linear``

This module needs only the standard library (Keras is imported by :func:`keras_model` alone), so the rule4ml
peer's own environment can load it by path (``benchmarks/rule4ml_peer.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu", "selu", "sigmoid", "tanh", "softmax", "softsign", "softplus",
               "hard_sigmoid", "hard_tanh", "gelu", "linear")
CONV_KINDS = ("conv1d", "conv2d", "dwconv1d", "dwconv2d", "sepconv1d", "sepconv2d")
POOL_KINDS = ("maxpool1d", "avgpool1d", "maxpool2d", "avgpool2d")
GLOBAL_POOL_KINDS = ("gmaxpool1d", "gavgpool1d", "gmaxpool2d", "gavgpool2d")


class DesignError(ValueError):
    """A design description (a token, a Keras layer) that cannot be read; the message names it."""


@dataclass(frozen=True)
class Node:
    """One layer: its kind (a token's name), input and output shapes (without the batch axis) and arguments."""

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    filters: int = 0
    kernel: int = 1  # kernel (or pool) width; square in 2-D
    stride: int = 1
    padding: str = "valid"
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def dims(self) -> int:
        return len(self.in_shape) - 1


def _out_len(n: int, kernel: int, stride: int, padding: str) -> int:
    return math.ceil(n / stride) if padding == "same" else (n - kernel) // stride + 1


def _spatial(kind: str, in_shape: tuple[int, ...], want: int) -> None:
    if len(in_shape) != want + 1:
        raise DesignError(f"{kind} needs a {want + 1}-D input (spatial axes and channels), got shape {in_shape}")


def apply(kind: str, in_shape: tuple[int, ...], *, filters: int = 0, kernel: int = 1, stride: int = 1,
          padding: str = "valid", name: str = "") -> Node:
    """The node of one layer applied to ``in_shape``; raises DesignError naming what does not fit."""
    if padding not in ("same", "valid"):
        raise DesignError(f"{name or kind}: padding {padding!r} is not same or valid")
    shape = tuple(in_shape)
    if kind == "dense":
        if len(shape) != 1:
            raise DesignError(f"{name or kind} needs a 1-D input (flatten first), got shape {shape}")
        out = (filters,)
    elif kind in CONV_KINDS or kind in POOL_KINDS:
        dims = int(kind[-2])
        _spatial(kind, shape, dims)
        step = kernel if kind in POOL_KINDS else stride
        if any(_out_len(n, kernel, step, padding) < 1 for n in shape[:-1]):
            raise DesignError(f"{name or kind}: a {kernel}-wide window does not fit the input {shape}")
        channels = shape[-1] if kind.startswith(("dw", "max", "avg")) else filters
        out = tuple(_out_len(n, kernel, step, padding) for n in shape[:-1]) + (channels,)
        if kind in POOL_KINDS:
            stride = kernel
    elif kind in GLOBAL_POOL_KINDS:
        _spatial(kind, shape, int(kind[-2]))
        out = (shape[-1],)
    elif kind in ("zeropad1d", "zeropad2d"):
        _spatial(kind, shape, int(kind[-2]))
        out = tuple(n + 2 * kernel for n in shape[:-1]) + (shape[-1],)
    elif kind in ("upsample1d", "upsample2d"):
        _spatial(kind, shape, int(kind[-2]))
        out = tuple(n * kernel for n in shape[:-1]) + (shape[-1],)
    elif kind == "flatten":
        out = (math.prod(shape),)
    elif kind in ACTIVATIONS or kind in ("bn", "input"):
        out = shape
    else:
        raise DesignError(f"unknown layer {kind!r}")
    return Node(kind, shape, out, filters, kernel, stride, padding, name or kind)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        raise DesignError(f"input shape {text!r} is not like 16 or 32x32x3") from None
    if not shape or min(shape) < 1:
        raise DesignError(f"input shape {text!r} has an empty axis")
    return shape


def _token(token: str, in_shape: tuple[int, ...], index: int) -> Node:
    kind, _, args = token.partition(":")
    parts = [p for p in args.split(",") if p] if args else []
    padding = "valid"
    if parts and parts[-1] in ("same", "valid"):
        padding = parts.pop()
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise DesignError(f"token {index} {token!r}: arguments must be integers (and same|valid)") from None
    name = f"{kind}_{index}"
    if kind == "dense" and len(numbers) == 1:
        return apply(kind, in_shape, filters=numbers[0], name=name)
    if kind in ("conv1d", "conv2d", "sepconv1d", "sepconv2d") and len(numbers) in (2, 3):
        return apply(kind, in_shape, filters=numbers[0], kernel=numbers[1], stride=(numbers[2:] or [1])[0],
                     padding=padding, name=name)
    if kind in ("dwconv1d", "dwconv2d") and len(numbers) in (1, 2):
        return apply(kind, in_shape, kernel=numbers[0], stride=(numbers[1:] or [1])[0], padding=padding, name=name)
    if kind in POOL_KINDS and len(numbers) == 1:
        return apply(kind, in_shape, kernel=numbers[0], padding=padding, name=name)
    if kind in ("zeropad1d", "zeropad2d", "upsample1d", "upsample2d") and len(numbers) == 1:
        return apply(kind, in_shape, kernel=numbers[0], name=name)
    if (kind in GLOBAL_POOL_KINDS or kind in ACTIVATIONS or kind in ("flatten", "bn")) and not numbers:
        return apply(kind, in_shape, name=name)
    raise DesignError(f"token {index} {token!r} is not a layer this language knows, or has the wrong arguments "
                      "(see fpgaflow_converter/calibration/designs.py)")


def parse(text: str) -> list[Node]:
    """The nodes of a one-line design, the input first; raises DesignError naming the bad token."""
    tokens = str(text).split()
    if not tokens or not tokens[0].startswith("input:"):
        raise DesignError(f"a design starts with input:SHAPE, got {text!r}")
    shape = _shape(tokens[0].partition(":")[2])
    nodes = [Node("input", shape, shape, name="input")]
    for index, token in enumerate(tokens[1:], start=1):
        nodes.append(_token(token, nodes[-1].out_shape, index))
    return nodes


def describe(nodes: list[Node]) -> str:
    """The one-line description of ``nodes`` (parse's inverse)."""
    words = ["input:" + "x".join(str(n) for n in nodes[0].in_shape)]
    for node in nodes[1:]:
        args: list = []
        if node.kind == "dense":
            args = [node.filters]
        elif node.kind in CONV_KINDS:
            args = ([] if node.kind.startswith("dw") else [node.filters]) + [node.kernel, node.stride, node.padding]
        elif node.kind in POOL_KINDS:
            args = [node.kernel, node.padding]
        elif node.kind.startswith(("zeropad", "upsample")):
            args = [node.kernel]
        words.append(node.kind + (":" + ",".join(str(a) for a in args) if args else ""))
    return " ".join(words)


def kernels(nodes: list[Node]) -> dict[str, tuple[int, int, int]]:
    """(size, fan in, fan out) of each multiplying layer's kernel, by name, as Keras counts them (a separable
    convolution's two kernels are not listed)."""
    out = {}
    for node in nodes:
        channels = node.in_shape[-1]
        area = node.kernel ** node.dims if node.kind in CONV_KINDS else 1
        if node.kind == "dense":
            out[node.name] = (node.in_shape[0] * node.filters, node.in_shape[0], node.filters)
        elif node.kind.startswith("dw"):  # Keras's depthwise kernel (area, channels, 1)
            out[node.name] = (area * channels, area * channels, area)
        elif node.kind in CONV_KINDS and not node.kind.startswith("sep"):
            out[node.name] = (area * channels * node.filters, area * channels, area * node.filters)
    return out


# ---- from a Keras model's config ---------------------------------------------------------------------------

_KERAS_ACTIVATIONS = {"relu": "relu", "leaky_relu": "leaky_relu", "elu": "elu", "selu": "selu",
                      "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax", "softsign": "softsign",
                      "softplus": "softplus", "hard_sigmoid": "hard_sigmoid", "gelu": "gelu", "linear": "linear"}
_KERAS_CLASSES = {"Dense": "dense", "QDense": "dense", "Conv1D": "conv1d", "QConv1D": "conv1d", "Conv2D": "conv2d",
                  "QConv2D": "conv2d", "DepthwiseConv1D": "dwconv1d", "DepthwiseConv2D": "dwconv2d",
                  "SeparableConv1D": "sepconv1d", "SeparableConv2D": "sepconv2d", "MaxPooling1D": "maxpool1d",
                  "AveragePooling1D": "avgpool1d", "MaxPooling2D": "maxpool2d", "AveragePooling2D": "avgpool2d",
                  "GlobalMaxPooling1D": "gmaxpool1d", "GlobalAveragePooling1D": "gavgpool1d",
                  "GlobalMaxPooling2D": "gmaxpool2d", "GlobalAveragePooling2D": "gavgpool2d",
                  "ZeroPadding1D": "zeropad1d", "ZeroPadding2D": "zeropad2d", "UpSampling1D": "upsample1d",
                  "UpSampling2D": "upsample2d", "Flatten": "flatten", "BatchNormalization": "bn",
                  "LeakyReLU": "leaky_relu", "ReLU": "relu", "PReLU": "prelu", "ELU": "elu", "Softmax": "softmax"}
_IGNORED = {"InputLayer", "Dropout", "Reshape", "Quantizer", "QuantizedActivation"}


def _first(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _keras_activation(cfg: dict) -> str:
    activation = cfg.get("activation") or "linear"
    if isinstance(activation, dict):  # a serialized function
        activation = activation.get("config", {}).get("name") or activation.get("class_name", "linear")
    return _KERAS_ACTIVATIONS.get(str(activation).lower(), str(activation).lower())


def _input_shape(layers: list[dict]) -> tuple[int, ...]:
    for layer in layers:
        cfg = layer.get("config", {})
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape:
            return tuple(int(n) for n in shape[1:])
    raise DesignError("the model's config names no input shape (build the model with an Input first)")


def nodes_from_keras_config(config: dict) -> list[Node]:
    """The nodes of a Sequential or linear functional Keras model, from its config (``model.get_config()``, or
    a ``.keras`` file's ``config.json``'s ``config``). A layer with a fused activation gives two nodes, as
    hls4ml splits it. Branching models (Add, Concatenate) raise DesignError naming the layer."""
    layers = config.get("layers", [])
    shape = _input_shape(layers)
    nodes = [Node("input", shape, shape, name="input")]
    for layer in layers:
        cls, cfg = layer.get("class_name", ""), layer.get("config", {})
        name = cfg.get("name", cls)
        if cls in _IGNORED:
            continue
        kind = _KERAS_CLASSES.get(cls)
        if cls == "Activation":
            kind = _keras_activation(cfg)
        if kind is None or (kind not in ACTIVATIONS and kind not in _KERAS_CLASSES.values()):
            raise DesignError(f"layer {name!r} ({cls}) is not one the estimate reads")
        if len(layer.get("inbound_nodes") or []) > 1:
            raise DesignError(f"layer {name!r} ({cls}) is called more than once; the estimate reads linear models")
        shape = nodes[-1].out_shape
        if kind in ("dense",):
            node = apply(kind, shape, filters=int(cfg["units"]), name=name)
        elif kind in CONV_KINDS:
            if int(cfg.get("depth_multiplier", 1)) != 1 or _first(cfg.get("dilation_rate", 1)) != 1:
                raise DesignError(f"layer {name!r} ({cls}): depth multipliers and dilations are not estimated")
            node = apply(kind, shape, filters=int(cfg.get("filters") or 0), kernel=_first(cfg["kernel_size"]),
                         stride=_first(cfg.get("strides", 1)), padding=cfg.get("padding", "valid"), name=name)
        elif kind in POOL_KINDS:
            node = apply(kind, shape, kernel=_first(cfg.get("pool_size", 2)), padding=cfg.get("padding", "valid"),
                         name=name)
        elif kind.startswith("zeropad"):
            node = apply(kind, shape, kernel=_first(cfg.get("padding", 1)), name=name)
        elif kind.startswith("upsample"):
            node = apply(kind, shape, kernel=_first(cfg.get("size", 2)), name=name)
        else:
            node = apply(kind, shape, name=name)
        nodes.append(node)
        activation = _keras_activation(cfg) if kind in ("dense",) + CONV_KINDS else "linear"
        if activation != "linear":
            nodes.append(apply(activation, node.out_shape, name=f"{name}_{activation}"))
    return nodes


def keras_model(text: str, name: str = "design"):
    """A Keras Sequential model of a one-line design (random weights), for tools that read Keras models."""
    import keras  # only here: the rest of this module needs the standard library alone

    nodes = parse(text)
    layers = [keras.layers.Input(nodes[0].in_shape)]
    classes = {v: k for k, v in _KERAS_CLASSES.items() if not k.startswith("Q") and k not in ("ReLU", "ELU", "Softmax")}
    for node in nodes[1:]:
        if node.kind in ACTIVATIONS:
            layers.append(keras.layers.PReLU() if node.kind == "prelu" else
                          keras.layers.LeakyReLU() if node.kind == "leaky_relu" else
                          keras.layers.Activation(node.kind))
            continue
        cls = getattr(keras.layers, classes[node.kind])
        dims = node.dims
        if node.kind == "dense":
            layers.append(cls(node.filters))
        elif node.kind in ("dwconv1d", "dwconv2d"):
            layers.append(cls((node.kernel,) * dims, strides=node.stride, padding=node.padding))
        elif node.kind in CONV_KINDS:
            layers.append(cls(node.filters, (node.kernel,) * dims, strides=node.stride, padding=node.padding))
        elif node.kind in POOL_KINDS:
            layers.append(cls(node.kernel, padding=node.padding))
        elif node.kind.startswith("zeropad"):
            layers.append(cls(node.kernel))
        elif node.kind.startswith("upsample"):
            layers.append(cls(node.kernel))
        else:
            layers.append(cls())
    return keras.Sequential(layers, name=name)
