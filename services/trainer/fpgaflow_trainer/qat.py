"""Quantization-aware fine-tuning: the float MLP rebuilt from HGQ2 layers fixed at the spec's HLS types.

Every quantizer is an HGQ2 fixed-point quantizer with constant integer and fraction bits (one type per
tensor, bit widths not trained, no bit-width regularizer), so the model computes in the types hls4ml
will use, and hls4ml 1.3's HGQ2 front end converts it bit-exactly (it derives every type, accumulators
included, from the quantizers). Where the quantizers sit:

- ``fcN``/``output`` (QDense): the input at the type of what feeds the layer (``hls.precision`` for the
  first, the preceding activation's ``result`` type otherwise), kernel and bias at the layer's
  ``weight``/``bias`` types, the output at its ``result`` type;
- the activations (``relu1``..) stay plain Keras activations: ReLU of a fixed-point value is exact;
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
from fpgaflow.keras_model import COMPUTE_DTYPE, L1Float32, exact_arithmetic
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
    if spec.model.type not in ("mlp", "keras") or spec.model.activation != "relu":
        raise SpecError([("quantize.method", f"qat fine-tunes relu mlp models, not a {spec.model.activation} "
                                             f"{spec.model.type}")])
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


def _check_mlp(model: keras.Model) -> None:
    allowed = (keras.layers.InputLayer, keras.layers.Dense, keras.layers.Activation)
    others = [f"{layer.name} ({type(layer).__name__})" for layer in model.layers if type(layer) not in allowed]
    activations = [layer.get_config()["activation"] for layer in model.layers if type(layer) is keras.layers.Activation]
    if others or not activations or activations[-1] != "softmax":
        raise SpecError([("quantize.method", "qat fine-tunes an mlp (Dense and Activation layers ending in softmax); "
                                             f"{model.name} has {', '.join(others) or 'no softmax at the end'}")])
    tables = sorted(set(activations[:-1]) - {"relu", "linear"})
    if tables:  # hls4ml computes them from lookup tables that the Keras functions do not reproduce bit for bit
        raise SpecError([("model.activation", f"qat needs relu activations, not {', '.join(tables)}")])


def to_qat(float_model: keras.Model, spec: ExperimentSpec) -> keras.Model:
    """The QAT twin of the float MLP: same layer names and weights, quantizers fixed at the spec's HLS
    types, compiled with Adam at quantize.learningRate (sparse categorical cross-entropy, accuracy)."""
    from hgq.layers import QDense, QSoftmax

    _check_mlp(float_model)
    with exact_arithmetic():
        inputs = keras.Input(float_model.inputs[0].shape[1:], name=float_model.layers[0].name)
        x, feeding = inputs, spec.hls.precision  # the type of what enters the next dense layer
        for layer in float_model.layers[1:]:
            activation = layer.get_config().get("activation")
            if isinstance(layer, keras.layers.Dense):
                types = layer_types(spec, layer.name)
                dense = QDense(
                    layer.units, name=layer.name, use_bias=layer.use_bias,
                    kernel_regularizer=_regularizer(layer.kernel_regularizer),
                    iq_conf=quantizer_config(feeding), kq_conf=quantizer_config(types["weight"], "weight"),
                    bq_conf=quantizer_config(types["bias"], "bias"), oq_conf=quantizer_config(types["result"]),
                    enable_iq=True, enable_oq=True, enable_ebops=False,
                )
                x = dense(x)
                dense.kernel.assign(keras.ops.cast(layer.kernel, COMPUTE_DTYPE))
                if layer.use_bias:
                    dense.bias.assign(keras.ops.cast(layer.bias, COMPUTE_DTYPE))
                feeding = types["result"]
            elif activation == "softmax":
                x = QSoftmax(
                    name=layer.name, stable=True, enable_ebops=False,
                    exp_iq_conf=quantizer_config(softmax_exp_input(spec, layer.name)),
                    exp_oq_conf=quantizer_config(SOFTMAX_EXP_TABLE, "table"),
                    inv_iq_conf=quantizer_config(softmax_sum_input(int(layer.output.shape[-1]))),
                    inv_oq_conf=quantizer_config(SOFTMAX_INV_TABLE, "table"),
                    enable_oq=True, oq_conf=quantizer_config(layer_types(spec, layer.name)["result"]),
                )(x)
            else:
                x = keras.layers.Activation(activation, name=layer.name)(x)
                feeding = layer_types(spec, layer.name)["result"]
        model = keras.Model(inputs, x, name=f"{float_model.name}_qat")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.quantize.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
