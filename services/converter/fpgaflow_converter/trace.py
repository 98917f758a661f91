"""Per-layer fidelity: each layer's float (Keras) output against the hls4ml emulation's, the first layer
whose error jumps and why (overflow or lost resolution), and a plot of value ranges against the types.

The emulation side uses hls4ml's own tracing (``ModelGraph.trace``); the Keras side one forward pass of a
``keras.Model`` that returns the matching layers' outputs. Layers are matched by name: hls4ml keeps the
Keras names, except that a Dense/Conv with a built-in activation becomes ``name`` plus ``name_<activation>``
(the latter is compared with the Keras layer's output) and layers hls4ml removes or fuses are skipped.
Tracing needs ``io_parallel`` (hls4ml's trace of a stream reads the stream empty).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fpgaflow.plots import pyplot

__all__ = ["TRACE_SAMPLES", "diagnose", "enable_trace", "layer_trace", "profiling_plot", "type_info"]

TRACE_SAMPLES = 500  # inputs a trace needs: enough for ranges and overflow fractions, milliseconds to run
JUMP_RELATIVE_ERROR = 0.05  # a layer's max |error| above this fraction of its float outputs' range is significant
JUMP_FACTOR = 10.0  # this many times the previous traced layer's relative error is a jump
OVERFLOW_FRACTION = 1e-3  # float outputs outside the type's range, above this fraction, make it an overflow
COARSE_LSB = 0.01  # a type's LSB above this fraction of the outputs' spread is coarse
FEW_LSB = 4.0  # an error within this many LSBs of the layer's type is its rounding (resolution)


# ------------------------------------------------------------------------------------------- types


def type_info(precision) -> dict:
    """An hls4ml precision type as numbers: width, integer bits, signed, rounding, saturation, the
    representable range [min, max] and the LSB. Non-fixed types (float, xnor) get what applies."""
    width = getattr(precision, "width", None)
    integer = getattr(precision, "integer", width)
    signed = bool(getattr(precision, "signed", True))
    info = {
        "type": str(precision),
        "width": width,
        "integer": integer,
        "signed": signed,
        "rounding": str(getattr(precision, "rounding_mode", "") or "") or None,
        "saturation": str(getattr(precision, "saturation_mode", "") or "") or None,
        "min": None,
        "max": None,
        "lsb": None,
    }
    if width is None or integer is None or type(precision).__name__ in ("XnorPrecisionType", "ExponentPrecisionType"):
        return info
    lsb = 2.0 ** (integer - width)
    top = 2.0 ** (integer - 1) if signed else 2.0**integer
    info.update(min=-top if signed else 0.0, max=top - lsb, lsb=lsb)
    return info


def _ap_name(info: dict) -> str:
    """ap_fixed<W,I> / ap_ufixed<W,I> as a user writes it in the spec (modes only where not TRN, WRAP)."""
    if info["lsb"] is None:
        return info["type"]
    if info["type"].lstrip("u").startswith("int"):
        return f"ap_{'' if info['signed'] else 'u'}int<{info['width']}>"
    modes = []
    if info["rounding"] not in (None, "TRN") or info["saturation"] not in (None, "WRAP"):
        modes = [f"AP_{info['rounding'] or 'TRN'}", f"AP_{info['saturation'] or 'WRAP'}"]
    return f"ap_{'' if info['signed'] else 'u'}fixed<{', '.join(map(str, [info['width'], info['integer'], *modes]))}>".replace(", ", ",")


# ------------------------------------------------------------------------------------------- tracing


def enable_trace(hls_model) -> None:
    """Have the next ``compile()`` build hls4ml's tracing into the emulation (in ``#ifndef __SYNTHESIS__``
    blocks, off unless a trace runs), so that :func:`layer_trace` needs no second compile."""
    hls_model.config.trace_output = True
    for layer in hls_model.get_layers():
        layer.set_attr("trace", True)


def _hls_trace(hls_model, x: np.ndarray) -> dict[str, np.ndarray]:
    """{layer name: outputs (samples, ...)} from hls4ml's trace; recompiles only if tracing is not built in."""
    if hls_model.config.get_config_value("IOType") == "io_stream":
        raise ValueError("hls4ml's layer trace needs io_parallel: tracing an io_stream model empties its streams")
    built_in = hls_model.config.trace_output and all(layer.get_attr("trace", False) for layer in hls_model.get_layers())
    if not built_in:
        enable_trace(hls_model)
        hls_model.compile()
    # ModelGraph.trace always recompiles first; the tracing is already in the library, so skip that.
    hls_model.compile = lambda: None
    try:
        _, traced = hls_model.trace(np.ascontiguousarray(x))
    finally:
        del hls_model.compile
    return {name: np.asarray(values).reshape(len(x), -1) for name, values in traced.items()}


def _keras_outputs(keras_model, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    import keras

    if not names:
        return {}
    probe = keras.Model(keras_model.inputs, [keras_model.get_layer(name).output for name in names])
    outputs = probe.predict(x, batch_size=4096, verbose=0)
    if len(names) == 1:
        outputs = [outputs]
    return {name: np.asarray(out).reshape(len(x), -1) for name, out in zip(names, outputs, strict=True)}


def _matches(keras_model, hls_names: list[str]) -> list[tuple[str, str]]:
    """(hls4ml layer, Keras layer) pairs whose outputs are the same quantity, in hls4ml's order."""
    keras_names = {layer.name for layer in keras_model.layers}
    pairs = []
    for name in hls_names:
        if name in keras_names:
            layer = keras_model.get_layer(name)
            activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
            if activation != "linear" and type(layer).__name__ != "Activation" and f"{name}_{activation}" in hls_names:
                continue  # hls4ml's `name` is the pre-activation; Keras only has the activated output
            pairs.append((name, name))
        else:
            base, _, activation = name.rpartition("_")
            if base in keras_names and getattr(getattr(keras_model.get_layer(base), "activation", None), "__name__", "") == activation:
                pairs.append((name, base))
    return pairs


def _layer_row(hls_name: str, keras_name: str, layer, ref: np.ndarray, emu: np.ndarray) -> dict:
    info = type_info(layer.get_output_variable().type.precision)
    error = np.abs(ref.astype(np.float64) - emu.astype(np.float64))
    spread = float(np.ptp(ref)) if ref.size else 0.0
    max_error = float(error.max()) if error.size else 0.0
    row = {
        "layer": hls_name,
        "keras_layer": keras_name,
        "class": layer.class_name,
        "samples": int(len(ref)),
        "float_min": float(ref.min()),
        "float_max": float(ref.max()),
        "float_range": spread,
        "max_abs_error": max_error,
        "mean_abs_error": float(error.mean()) if error.size else 0.0,
        "relative_error": max_error / spread if spread > 0 else (0.0 if max_error == 0 else math.inf),
        "result_type": info,
        "overflow_fraction": None,
        "overflow_low": None,
        "overflow_high": None,
        "error_lsb": None,
        "within_few_lsb": None,
    }
    if info["lsb"] is not None:
        high = int((ref > info["max"] + info["lsb"]).sum())
        low = int((ref < info["min"] - info["lsb"]).sum())
        row.update(
            overflow_fraction=(high + low) / ref.size if ref.size else 0.0,
            overflow_low=low,
            overflow_high=high,
            error_lsb=max_error / info["lsb"],
            within_few_lsb=bool(max_error <= FEW_LSB * info["lsb"]),
        )
    return row


def layer_trace(keras_model, hls_model, x: np.ndarray, config: dict | None = None) -> list[dict]:
    """Per traced layer, in hls4ml's order, the float Keras output against the emulation's on inputs ``x``.

    Each row: layer names (hls4ml's, Keras'), max/mean |error|, relative error (max |error| over the float
    outputs' range), the result type (:func:`type_info`), the fraction of float outputs outside the type's
    range (overflow_fraction; counts overflow_low/high), the error in LSBs and whether it is within
    FEW_LSB of them. ``config`` (the hls4ml configuration used) is optional: if given, its ``Trace``
    flags are set too, so that a later conversion from it traces. Recompiles ``hls_model`` with tracing
    unless :func:`enable_trace` was called before its compile.
    """
    if config is not None:
        for layer_config in config.get("LayerName", {}).values():
            layer_config["Trace"] = True
    x = np.asarray(x, dtype=np.float32)
    traced = _hls_trace(hls_model, x)
    layers = {layer.name: layer for layer in hls_model.get_layers()}
    pairs = _matches(keras_model, [name for name in layers if name in traced])
    reference = _keras_outputs(keras_model, x, sorted({keras_name for _, keras_name in pairs}))
    rows = []
    for hls_name, keras_name in pairs:
        ref, emu = reference[keras_name], traced[hls_name]
        if ref.shape != emu.shape:  # e.g. a layout hls4ml changed (channels); not comparable element-wise
            continue
        rows.append(_layer_row(hls_name, keras_name, layers[hls_name], ref, emu))
    return rows


# ------------------------------------------------------------------------------------------- diagnosis


def _overflows(row: dict) -> bool:
    return row["overflow_fraction"] is not None and row["overflow_fraction"] > OVERFLOW_FRACTION


def _coarse(row: dict) -> bool:
    lsb = row["result_type"]["lsb"]
    return lsb is not None and row["float_range"] > 0 and lsb > COARSE_LSB * row["float_range"]


def diagnose(trace: list[dict]) -> dict | None:
    """The first layer whose error jumps, and why; None when no layer's error is significant.

    The rule, over the traced layers in order:

    1. The error is significant at the first layer whose relative error (max |error| over its float
       outputs' range) exceeds JUMP_RELATIVE_ERROR (5 %); none: None.
    2. Up to that layer, the first whose own result type explains an error: it overflows (more than
       OVERFLOW_FRACTION, 0.1 %, of its float outputs outside the type's range: kind ``overflow``) or its
       LSB is coarse (above COARSE_LSB, 1 %, of its outputs' spread: kind ``resolution``). A layer after
       it (a ReLU halving the range, the next Dense) carries the error on and is not blamed.
    3. No such layer: the last layer up to the significant one whose relative error is JUMP_FACTOR (10)
       times the previous layer's (else the significant one), kind ``resolution`` with precision lost
       inside the layer (weights, biases, accumulator, tables).
    """
    first = next((i for i, row in enumerate(trace) if row["relative_error"] > JUMP_RELATIVE_ERROR), None)
    if first is None:
        return None
    for row in trace[: first + 1]:
        if _overflows(row) or _coarse(row):
            return _explain(row)
    origin = first
    while origin > 0 and trace[origin]["relative_error"] <= JUMP_FACTOR * trace[origin - 1]["relative_error"]:
        origin -= 1
    return _explain(trace[origin])


def _explain(row: dict) -> dict:
    name, info = row["layer"], row["result_type"]
    knob = f"hls.layers.{row['keras_layer']}.precision.result"
    found = {
        "layer": name,
        "keras_layer": row["keras_layer"],
        "type": info["type"],
        "relative_error": row["relative_error"],
        "max_abs_error": row["max_abs_error"],
    }
    fraction = row["overflow_fraction"]
    if _overflows(row):
        largest = row["float_max"] if abs(row["float_max"]) >= abs(row["float_min"]) else row["float_min"]
        needed = math.ceil(math.log2(max(abs(row["float_max"]), abs(row["float_min"])) + info["lsb"])) + int(info["signed"])
        found.update(
            kind="overflow",
            overflow_fraction=fraction,
            largest=largest,
            type_min=info["min"],
            type_max=info["max"],
            message=(
                f"{name} overflows: {fraction:.1%} of its float outputs ({row['overflow_high']} above, "
                f"{row['overflow_low']} below) lie outside {_ap_name(info)}'s range "
                f"[{info['min']:g}, {info['max']:g}]; largest {largest:.3g}; widen its integer bits "
                f"to at least {needed} ({knob})"
            ),
        )
        return found
    spread = row["float_range"]
    if _coarse(row) or (info["lsb"] is not None and row["within_few_lsb"]):
        message = (
            f"{name} loses resolution: its LSB {info['lsb']:g} ({_ap_name(info)}) is {info['lsb'] / spread:.1%} "
            f"of its outputs' spread {spread:.3g}, an error of up to {row['max_abs_error']:.3g} "
            f"({row['error_lsb']:.1f} LSB); give it more fractional bits ({knob})"
        )
    else:
        message = (
            f"{name} loses precision inside the layer: error up to {row['max_abs_error']:.3g} "
            f"({row['relative_error']:.1%} of its outputs' spread {spread:.3g}) with values in its result type "
            f"{info['type']}; check its weight, bias, accumulator or table types (hls.layers.{row['keras_layer']})"
        )
    found.update(kind="resolution", lsb=info["lsb"], float_range=spread, message=message)
    return found


# ------------------------------------------------------------------------------------------- plot


def _log2_abs(values: np.ndarray) -> np.ndarray:
    values = np.abs(np.asarray(values, dtype=np.float64).ravel())
    values = values[values > 0]
    return np.log2(values)


def _shade(ax, position: int, info: dict) -> None:
    """The type's representable magnitudes, [LSB, max], as a band behind the box at ``position``."""
    if info["lsb"] is None:
        return
    top = max(abs(info["min"]), abs(info["max"]))
    ax.fill_betweenx([position - 0.4, position + 0.4], math.log2(info["lsb"]), math.log2(top), color="tab:gray", alpha=0.25, linewidth=0)


def profiling_plot(keras_model, hls_model, x: np.ndarray, path: Path) -> Path:
    """A PNG of each layer's weight magnitudes and activation magnitudes (boxes on a log2 axis, whiskers
    at min/max) against its type's representable magnitudes [LSB, max] (gray bands): a box reaching right
    of its band overflows, one left of it is rounded to zero. Activations are the Keras (float) outputs
    on ``x``; weights are the float values hls4ml quantizes."""
    plt = pyplot()
    weights = []  # (label, log2 |values|, type info)
    for layer in hls_model.get_layers():
        for variable in layer.get_weights():
            data = np.asarray(variable.data)
            if data.size and np.issubdtype(data.dtype, np.number):
                kind = "b" if variable.name.startswith("b") else "w"
                weights.append((f"{layer.name}/{kind}", _log2_abs(data), type_info(variable.type.precision)))
    layers = {layer.name: layer for layer in hls_model.get_layers()}
    pairs = _matches(keras_model, list(layers))
    outputs = _keras_outputs(keras_model, np.asarray(x, dtype=np.float32), sorted({k for _, k in pairs}))
    activations = [(h, _log2_abs(outputs[k]), type_info(layers[h].get_output_variable().type.precision)) for h, k in pairs]

    height = max(len(weights), len(activations), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.45 * height))
    for ax, rows, title in ((axes[0], weights, "weights and biases"), (axes[1], activations, "layer outputs (float, on the test inputs)")):
        rows = rows[::-1]  # first layer on top
        for position, (_, _, info) in enumerate(rows, start=1):
            _shade(ax, position, info)
        shown = [values if values.size else np.array([np.nan]) for _, values, _ in rows]
        if rows:
            ax.boxplot(shown, vert=False, whis=(0, 100), widths=0.5, showfliers=False)
            ax.set_yticks(range(1, len(rows) + 1), [f"{label}\n{_ap_name(info)}" for label, _, info in rows], fontsize=7)
        ax.set_xlabel("log2 |value|")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("Value ranges against each type's representable magnitudes (gray: LSB to max)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
