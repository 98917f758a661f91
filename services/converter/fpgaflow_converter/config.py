"""hls4ml's configuration of a trained model: the one place where the spec's ``hls`` section becomes the
per-layer dict that ``hls4ml.converters.convert_from_keras_model`` takes."""

from __future__ import annotations

import copy
import math

from fpgaflow.spec import HLSSpec, LayerHLSSpec

# hls4ml's softmax addresses its exp table with the top bits of x_max - x: with 1024 entries two logits
# closer than 1/32 share an entry and tie, flipping about 1 % of the jet tagger's decisions; 4096 entries
# (a step of 1/128, a few more BRAM18) keep the argmax agreement above 99 %.
SOFTMAX_TABLE_SIZE = 4096
# x_max - x in that address type saturates at 32 (where exp(-x) is 0 anyway) instead of wrapping,
# which hls4ml's default does and which turns a very unlikely class into a likely one.
SOFTMAX_NORM_TYPE = "ap_ufixed<16,5,AP_RND,AP_SAT>"


def softmax_sum_type(n_classes: int) -> str:
    """A type for the sum of a softmax's exponentials (each at most 1): just wide enough for n_classes.

    hls4ml's default, ap_fixed<18,8>, addresses its 1/x table with the top 10 bits, a step of 0.25,
    which leaves the probabilities up to 0.2 off; this type's step is 2^(I-10).
    """
    integer_bits = max(1, math.ceil(math.log2(n_classes + 1)))
    return f"ap_ufixed<18,{integer_bits},AP_RND,AP_SAT>"


def hls_config(base: dict, hls: HLSSpec, n_classes: int, quantized: bool = False) -> dict:
    """hls4ml's per-layer configuration (``config_from_keras_model(model, granularity='name')``, ``base``)
    with the spec applied; ``base`` is not modified.

    Reuse factor and strategy apply model-wide and per layer (``hls.layers``) to every model. The types:

    - A float model: every layer's result type is the spec's precision. hls4ml 1.3 leaves results 'auto',
      which with Keras 3 gives the softmax an input so wide that its exp table sees one value and every
      output is the same. Weights and biases follow the default precision; accumulators stay hls4ml's
      'auto' (wide enough to be exact). Softmax layers get a sum type sized for the number of classes
      (:func:`softmax_sum_type`) and SOFTMAX_TABLE_SIZE table entries addressed by a saturating
      SOFTMAX_NORM_TYPE. The per-layer precisions and table sizes of ``hls.layers`` apply last.
    - A quantization-aware (HGQ2) model, ``quantized``: the types stay hls4ml's 'auto'. Its bit-exact pass
      derives every one (accumulators included) from the quantizers, which already hold hls.precision and
      the per-layer precisions and table sizes; a type set here would break the bit-exact agreement.
    """
    cfg = copy.deepcopy(base)
    model = cfg.setdefault("Model", {})
    if not quantized:
        model["Precision"] = {"default": hls.precision}
    model["ReuseFactor"], model["Strategy"] = hls.reuse_factor, hls.strategy
    for name, layer in cfg.get("LayerName", {}).items():
        override = hls.layers.get(name)
        if "ReuseFactor" in layer:
            layer["ReuseFactor"] = override.reuse_factor if override and override.reuse_factor else hls.reuse_factor
        if override is not None and override.strategy is not None:
            layer["Strategy"] = override.strategy
        if not quantized:
            _apply_types(layer, hls, override, n_classes)
    return cfg


def _apply_types(layer: dict, hls: HLSSpec, override: LayerHLSSpec | None, n_classes: int) -> None:
    """A float model's layer types: results at hls.precision, the softmax's tables, then hls.layers' overrides."""
    precision = layer.get("Precision")
    if isinstance(precision, dict):
        if precision.get("result") == "auto":
            precision["result"] = hls.precision
    elif precision == "auto":
        layer["Precision"] = hls.precision
    if layer.get("Implementation") in ("stable", "latency"):  # a softmax
        layer["inv_inp_t"] = softmax_sum_type(n_classes)
        layer["TableSize"] = SOFTMAX_TABLE_SIZE
        layer["inp_norm_t"] = SOFTMAX_NORM_TYPE
    if override is None:
        return
    if override.precision is not None:
        if not isinstance(layer.get("Precision"), dict):
            layer["Precision"] = {"result": layer.get("Precision", hls.precision)}
        layer["Precision"].update(override.precision.model_dump(exclude_none=True))
    if override.table_size is not None:
        layer["TableSize"] = override.table_size
