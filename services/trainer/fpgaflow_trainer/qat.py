"""Quantization-aware fine-tuning: the float model (MLP, CNN, residual network) rebuilt from HGQ2 layers fixed
at the spec's HLS types.

Every quantizer is an HGQ2 fixed-point quantizer with constant integer and fraction bits (one type per
tensor, bit widths not trained, no bit-width regularizer), so the model computes in the types hls4ml
will use, and hls4ml 1.3's HGQ2 front end converts it bit-exactly (it derives every type, accumulators
included, from the quantizers). Where the quantizers sit:

- Dense and convolution layers (QDense, QConv1D, QConv2D): the input at the type of what feeds the layer
  (``hls.precision`` for the first, the preceding layer's output type otherwise), kernel and bias at the
  layer's ``weight``/``bias`` types, the output at its ``result`` type;
- a residual Add (QAdd): the exact sum quantized to its ``result`` type;
- the activations (``relu1``..), max pooling and Flatten stay plain Keras layers: they are exact on
  fixed-point values;
- ``softmax`` is HGQ2's table-based QSoftmax with fixed tables (:data:`SOFTMAX_EXP_INPUT` addresses the
  exp table, :func:`softmax_sum_input` the 1/x table), its output at its ``result`` type.

``accum`` overrides do not apply: hls4ml sizes the accumulators to be exact, as the Keras model computes.

The model computes in float64 (:data:`COMPUTE_DTYPE`), which holds every product and sum of these
fixed-point values exactly (up to 53 significant bits); in float32 (24 bits) the products and sums of
wide types round, and the model stops matching hls4ml (at ap_fixed<24,8>, 21 of 4000 jets' logits differ).
HGQ2 creates its quantizers without a dtype, so the model must be built and loaded while the global
dtype policy is float64: :func:`to_qat` and :func:`fpgaflow.keras_model.load_model` do that.
"""

from __future__ import annotations

import math
import re

import keras

from fpgaflow.errors import SpecError
from fpgaflow.keras_model import COMPUTE_DTYPE, L1Float32, exact_arithmetic, parents
from fpgaflow.spec import ExperimentSpec

SOFTMAX_EXP_INPUT = "ap_ufixed<12,5,AP_RND,AP_SAT>"  # 4096 entries for x_max - x in [0, 32), steps of 1/128
# exp(-x) and 1/sum, both in (0, 1], to 11 fraction bits (hls4ml's default tables have 10 fraction bits).
SOFTMAX_EXP_TABLE = "ap_ufixed<12,1,AP_RND_CONV,AP_SAT>"
SOFTMAX_INV_TABLE = "ap_ufixed<12,1,AP_RND_CONV,AP_SAT>"
SOFTMAX_SUM_FRACTION = 7  # the sum of exponentials addresses the 1/x table in steps of 1/128

_FIXED = re.compile(r"^ap_(u?)fixed<(\d+),(-?\d+)(?:,AP_(\w+?))?(?:,AP_(\w+?))?(?:,\d+)?>$")
_INT = re.compile(r"^ap_(u?)int<(\d+)>$")
_ROUNDING = ("TRN", "RND", "RND_CONV")  # the rounding and saturation modes HGQ2 quantizers implement
_SATURATION = ("WRAP", "SAT", "SAT_SYM")


def hls_type_kif(precision: str) -> dict:
    """An HLS type as HGQ2's fixed-point parameters: k0 (signed), i0 (integer bits without the sign),
    f0 (fraction bits), round_mode and overflow_mode. SpecError for modes HGQ2 does not implement."""
    text = precision.replace(" ", "")
    fixed, integer = _FIXED.match(text), _INT.match(text)
    if fixed:
        unsigned, width, int_bits, rounding, saturation = fixed.groups()
        width, int_bits = int(width), int(int_bits)
    elif integer:
        unsigned, width, rounding, saturation = integer.group(1), int(integer.group(2)), None, None
        int_bits = width
    else:
        raise SpecError([("hls", f"{precision!r} is not an ap_fixed, ap_ufixed, ap_int or ap_uint type")])
    rounding, saturation = rounding or "TRN", saturation or "WRAP"
    if rounding not in _ROUNDING or saturation not in _SATURATION:
        raise SpecError([("hls", f"{precision}: quantize.method qat supports the roundings AP_{', AP_'.join(_ROUNDING)} "
                                 f"and the saturations AP_{', AP_'.join(_SATURATION)}")])
    signed = 0 if unsigned else 1
    return {"k0": signed, "i0": int_bits - signed, "f0": width - int_bits, "round_mode": rounding,
            "overflow_mode": saturation}


def check_spec(spec: ExperimentSpec) -> None:
    """Refuse, before any training, a quantize.method qat spec that :func:`to_qat` could not build: a model
    other than a relu mlp, or an HLS type whose rounding or saturation HGQ2 does not implement."""
    if spec.quantize.method != "qat":
        return
    if spec.model.type not in ("mlp", "cnn", "resnet", "keras") or spec.model.activation != "relu":
        raise SpecError([("quantize.method", f"qat fine-tunes relu mlp, cnn and resnet models, not a "
                                             f"{spec.model.activation} {spec.model.type}")])
    hls_type_kif(spec.hls.precision)
    for name, layer in spec.hls.layers.items():
        for kind, precision in (layer.precision.model_dump(exclude_none=True) if layer.precision else {}).items():
            if kind != "accum":
                try:
                    hls_type_kif(precision)
                except SpecError as error:
                    raise SpecError([(f"hls.layers.{name}.precision.{kind}", error.problems[0][1])]) from None


def quantizer_config(precision: str, place: str = "datalane"):
    """A fixed HGQ2 quantizer config at ``precision``: one type for the whole tensor, bits not trained."""
    from hgq.config import QuantizerConfig

    return QuantizerConfig("kif", place, **hls_type_kif(precision), heterogeneous_axis=(), trainable=False,
                           ic=None, fc=None, ir=None, fr=None)


def layer_types(spec: ExperimentSpec, name: str) -> dict[str, str]:
    """The weight, bias and result types of layer ``name``: hls.precision with its hls.layers overrides."""
    types = dict.fromkeys(("weight", "bias", "result"), spec.hls.precision)
    override = spec.hls.layers.get(name)
    if override is not None and override.precision is not None:
        types.update(override.precision.model_dump(exclude_none=True, include={"weight", "bias", "result"}))
    return types


def softmax_sum_input(n_classes: int) -> str:
    """The type of the sum of exponentials that addresses the 1/x table: wide enough for n_classes."""
    integer_bits = max(1, math.ceil(math.log2(n_classes + 1)))
    return f"ap_ufixed<{integer_bits + SOFTMAX_SUM_FRACTION},{integer_bits},AP_RND,AP_SAT>"


def softmax_exp_input(spec: ExperimentSpec, name: str) -> str:
    """The exp table's address type; ``hls.layers[name].tableSize`` entries where given."""
    override = spec.hls.layers.get(name)
    if override is None or override.table_size is None:
        return SOFTMAX_EXP_INPUT
    return f"ap_ufixed<{int(math.log2(override.table_size))},5,AP_RND,AP_SAT>"


def _regularizer(float_regularizer):
    if float_regularizer is None:
        return None
    if type(float_regularizer) is not keras.regularizers.L1:
        raise SpecError([("quantize.method", f"qat keeps L1 kernel regularization only, not {float_regularizer!r}")])
    return L1Float32(float(float_regularizer.l1))


# The layers the QAT twin is built of, by the float model's class: quantized (HGQ2) where hls4ml converts a
# quantizer, plain Keras where the layer is exact on fixed-point values (ReLU, max pooling, Flatten).
QUANTIZED = ("Dense", "Conv1D", "Conv2D", "Add")
EXACT = ("InputLayer", "Activation", "MaxPooling1D", "MaxPooling2D", "Flatten")


def _check_convertible(model: keras.Model) -> None:
    """Refuse a float model that to_qat cannot rebuild: layers other than QUANTIZED and EXACT, activations other
    than relu and linear before the final softmax."""
    others = [f"{layer.name} ({type(layer).__name__})" for layer in model.layers
              if type(layer).__name__ not in QUANTIZED + EXACT]
    activations = [layer.get_config()["activation"] for layer in model.layers if type(layer) is keras.layers.Activation]
    if others or not activations or activations[-1] != "softmax":
        raise SpecError([("quantize.method", "qat fine-tunes Dense, Conv1D/Conv2D, Add, max pooling, Flatten and "
                                             f"Activation layers ending in softmax; {model.name} has "
                                             f"{', '.join(others) or 'no softmax at the end'}")])
    tables = sorted(set(activations[:-1]) - {"relu", "linear"})
    if tables:  # hls4ml computes them from lookup tables that the Keras functions do not reproduce bit for bit
        raise SpecError([("model.activation", f"qat needs relu activations, not {', '.join(tables)}")])


def _weights_from(twin, layer) -> None:
    twin.kernel.assign(keras.ops.cast(layer.kernel, COMPUTE_DTYPE))
    if layer.use_bias:
        twin.bias.assign(keras.ops.cast(layer.bias, COMPUTE_DTYPE))


def _multiplying(layer, spec: ExperimentSpec, feeding: str | None):
    """The HGQ2 twin of a Dense or convolution: the input at the type that feeds it (no input quantizer where
    ``feeding`` is None: a shared one precedes it), kernel and bias at the layer's weight and bias types, the
    output at its result type."""
    from hgq.layers import QConv1D, QConv2D, QDense

    types = layer_types(spec, layer.name)
    common = {"name": layer.name, "use_bias": layer.use_bias, "kernel_regularizer": _regularizer(layer.kernel_regularizer),
              "kq_conf": quantizer_config(types["weight"], "weight"), "bq_conf": quantizer_config(types["bias"], "bias"),
              "oq_conf": quantizer_config(types["result"]), "enable_iq": feeding is not None, "enable_oq": True,
              "enable_ebops": False}
    if feeding is not None:
        common["iq_conf"] = quantizer_config(feeding)
    if isinstance(layer, keras.layers.Dense):
        return QDense(layer.units, **common)
    config = layer.get_config()
    conv = QConv2D if isinstance(layer, keras.layers.Conv2D) else QConv1D
    return conv(layer.filters, config["kernel_size"], strides=config["strides"], padding=config["padding"], **common)


def to_qat(float_model: keras.Model, spec: ExperimentSpec) -> keras.Model:
    """The QAT twin of the float model (an MLP, a CNN, a residual network): the same graph, layer names and
    weights, quantizers fixed at the spec's HLS types, compiled with Adam at quantize.learningRate (sparse
    categorical cross-entropy, accuracy).

    Each layer's output type (what feeds the layers that read it): the layer's ``result`` type for Dense,
    convolutions, activations and Add (HGQ2's QAdd quantizes the exact sum to it); its input's type for max
    pooling and Flatten, which are exact."""
    from hgq.layers import QAdd, QSoftmax, Quantizer

    _check_convertible(float_model)
    readers = {}  # layer name -> how many layers read its output
    for layer in float_model.layers:
        for name in parents(layer):
            readers[name] = readers.get(name, 0) + 1
    with exact_arithmetic():
        outputs: dict[str, tuple] = {}  # layer name -> (its output tensor, that output's HLS type)
        for layer in float_model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                inputs = keras.Input(float_model.inputs[0].shape[1:], name=layer.name)
                outputs[layer.name] = (inputs, spec.hls.precision)
                if readers.get(layer.name, 0) > 1:  # one quantizer for the layers that share the input (a
                    # quantizer per reader becomes a layer of its own, which hls4ml streams cannot hold)
                    quantized = Quantizer(quantizer_config(spec.hls.precision), name=f"{layer.name}_q")(inputs)
                    outputs[layer.name] = (quantized, None)
                continue
            sources = [outputs[name] for name in parents(layer)]
            x, feeding = sources[0]
            result = layer_types(spec, layer.name)["result"]
            activation = layer.get_config().get("activation")
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)):
                # an output that several layers read is fixed-point already (quantized where it was made): their
                # own input quantizers would each become a layer, which hls4ml streams cannot hold
                shared = readers[parents(layer)[0]] > 1
                twin = _multiplying(layer, spec, None if shared else feeding)
                y = twin(x)
                _weights_from(twin, layer)
            elif isinstance(layer, keras.layers.Add):  # its inputs are quantized already (the layers' outputs)
                y = QAdd(name=layer.name, enable_iq=False, enable_oq=True, oq_conf=quantizer_config(result),
                         enable_ebops=False)([t for t, _ in sources])
            elif isinstance(layer, keras.layers.Activation) and activation == "softmax":
                y = QSoftmax(
                    name=layer.name, stable=True, enable_ebops=False,
                    exp_iq_conf=quantizer_config(softmax_exp_input(spec, layer.name)),
                    exp_oq_conf=quantizer_config(SOFTMAX_EXP_TABLE, "table"),
                    inv_iq_conf=quantizer_config(softmax_sum_input(int(layer.output.shape[-1]))),
                    inv_oq_conf=quantizer_config(SOFTMAX_INV_TABLE, "table"),
                    enable_oq=True, oq_conf=quantizer_config(result),
                )(x)
            elif isinstance(layer, keras.layers.Activation):
                y = keras.layers.Activation(activation, name=layer.name)(x)
            else:  # max pooling, Flatten: exact, the input's type passes through
                y, result = type(layer).from_config(layer.get_config())(x), feeding
            outputs[layer.name] = (y, result)
        model = keras.Model(inputs, outputs[float_model.layers[-1].name][0], name=f"{float_model.name}_qat")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.quantize.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
