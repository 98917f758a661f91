"""The `convert` stage: hls4ml conversion with the spec's settings, compile, and a fidelity check."""

from __future__ import annotations

import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from fpgaflow import keras_model
from fpgaflow.emulation.library import load_emulator, write_manifest
from fpgaflow.emulation.timing import device_timing
from fpgaflow.errors import FidelityError, MissingArtifact, StageError
from fpgaflow.preprocess import Scaler
from fpgaflow.scores import per_class_auc
from fpgaflow.spec import HLSSpec, RetrainHeadSpec, bnn_folding
from fpgaflow.trial import EVALUATION_SAMPLES, RETRAINED, TRAINSET, TrialDir, read_json, write_json
from fpgaflow_converter import export, trace
from fpgaflow_converter.config import hls_config
from fpgaflow_converter.estimate import estimate as estimate_resources
from fpgaflow_converter.layershapes import layers_from_hls_model
from fpgaflow_converter.retrain import head_layers, retrain_head

if TYPE_CHECKING:
    import keras

PROJECT = "myproject"
# Test samples on which the vectorized emulator's outputs are checked against hls4ml's own C simulation
# before it computes the fidelity check (about 0.1 s of the C simulation for the jet tagger).
REFERENCE_CHECK_SAMPLES = 2000


def multiplier_shapes(model) -> dict[str, tuple[int, int]]:
    """(n_in, n_out) of each layer with a kernel, as hls4ml counts them for its reuse factor: a dense
    kernel's rows and columns, a convolution's kernel height x width x channels and filters."""
    shapes = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) >= 2:
            shape = tuple(int(d) for d in kernel.shape)
            shapes[layer.name] = (math.prod(shape[:-1]), shape[-1])
    return shapes


def correct_reuse_factors(config: dict, shapes: dict[str, tuple[int, int]], backend) -> list[dict]:
    """hls4ml's rule for a layer's reuse factor (``backend.get_valid_reuse_factors``: it divides n_in x n_out,
    and with n_in it fits the multiplier array) applied to every layer with a kernel: an invalid one becomes
    the nearest valid one (hls4ml's choice, the smaller of two equally near), and each change is listed.
    hls4ml itself corrects only Resource-strategy layers, silently but for a printed warning."""
    corrections = []
    for name, (n_in, n_out) in shapes.items():
        layer = config.get("LayerName", {}).get(name)
        if layer is None:
            continue
        asked = int(layer.get("ReuseFactor", config.get("Model", {}).get("ReuseFactor", 1)))
        valid = backend.get_valid_reuse_factors(n_in, n_out)
        if asked not in valid:
            used = backend.get_closest_reuse_factor(valid, asked)
            layer["ReuseFactor"] = used
            corrections.append({"layer": name, "asked": asked, "used": used, "shape": [n_in, n_out], "valid": valid})
    return corrections


def emulate(project_dir: Path, hls_predict, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """The firmware's outputs on x, and how they were computed.

    fpgaflow's vectorized emulator (fastemu) computes them where it covers the network and gives hls4ml's
    bits (``hls_predict``, the compiled C simulation) on the first REFERENCE_CHECK_SAMPLES; otherwise, or
    if it ever differed, hls4ml's C simulation computes all of them and the record says why."""
    from fpgaflow.emulation.project import load_project

    def timed(predict, inputs):
        started = time.perf_counter()
        out = np.asarray(predict(np.ascontiguousarray(inputs))).reshape(len(inputs), -1)
        return out, round(len(inputs) / max(time.perf_counter() - started, 1e-9), 1)

    probe = x[:REFERENCE_CHECK_SAMPLES]
    reference, hls_rate = timed(hls_predict, probe)
    record = {"hls4ml_samples_per_second": hls_rate, "checked_samples": len(probe)}
    try:
        fast = load_project(project_dir, PROJECT)
    except NotImplementedError as exc:
        fast, record["fallback"] = None, f"the vectorized emulator does not cover the network: {exc}"
    if fast is not None:
        emulated, rate = timed(fast.predict, x)
        if np.array_equal(emulated[: len(probe)].view(np.uint32), reference.view(np.uint32)):
            return emulated, {"path": "vectorized", "layers": fast.paths, "samples_per_second": rate, **record}
        record["fallback"] = "the vectorized emulator differed from hls4ml's C simulation on the check (a bug: please report it)"
        print(f"convert: warning: {record['fallback']}")
    emulated, rate = timed(hls_predict, x)
    return emulated, {"path": "hls4ml", "samples_per_second": rate, **record}


def fidelity(reference: np.ndarray, emulated: np.ndarray, labels: np.ndarray) -> dict:
    """Float model against emulation on the same inputs: accuracies, argmax agreement, largest error."""
    ref_class, emu_class = reference.argmax(axis=1), emulated.argmax(axis=1)
    return {
        "samples": len(labels),
        "accuracy_float": float((ref_class == labels).mean()),
        "accuracy_emulated": float((emu_class == labels).mean()),
        "argmax_agreement": float((ref_class == emu_class).mean()),
        "max_abs_error": float(np.abs(reference - emulated).max()),
        "mean_abs_error": float(np.abs(reference - emulated).mean()),
        "emulated_output_spread": float(np.ptp(emulated, axis=0).max()),
    }


def _check(report: dict, hls: HLSSpec) -> None:
    """Fail the stage when the emulation does not compute what the float model computes, saying why:
    the per-layer diagnosis names the first layer whose error jumps (overflow or resolution), when there is one."""
    found = (report.get("diagnosis") or {}).get("message")
    hint = found or "widen hls.precision or the failing layers' types"
    if report["emulated_output_spread"] == 0.0:
        raise FidelityError(
            "the emulation returns the same output for every input (a constant softmax); "
            "check the softmax and output layer types in hls.layers"
        )
    if report["argmax_agreement"] < hls.min_agreement:
        raise FidelityError(
            f"the emulation agrees with the float model on {report['argmax_agreement']:.2%} of the test set, "
            f"below hls.minAgreement {hls.min_agreement:.2%} (float accuracy {report['accuracy_float']:.4f}, "
            f"emulated {report['accuracy_emulated']:.4f}); {hint}"
        )


_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>|\b([A-Z]\w+)\b")


def unconvertible(model, exc: Exception, version: str, io_type: str) -> StageError:
    """What hls4ml could not convert, as a StageError (reason UnsupportedLayer) that names the layer and its
    class when hls4ml's message names a class of the model's layers, and says what hls4ml said."""
    said = f"{type(exc).__name__}: {exc}".strip()
    classes = {layer.__class__.__name__: layer.name for layer in model.layers}
    named = [m.group(1) or m.group(2) for m in _CLASS.finditer(said)]
    culprit = next((c for c in named if c in classes), None)
    where = f"layer {classes[culprit]!r} ({culprit})" if culprit else "the model"
    return StageError(f"hls4ml {version} cannot convert {where} with {io_type}; hls4ml said: {said}",
                      reason="UnsupportedLayer")


@dataclass(frozen=True)
class Inputs:
    """What the stage converts and checks: the trained model, the spec's hls settings and the scaled test set."""

    model: keras.Model
    hls: HLSSpec
    quantized: bool  # quantize.method qat: the model's quantizers carry the HLS types
    x: np.ndarray  # the first EVALUATION_SAMPLES test samples, scaled as in training
    y: np.ndarray  # their labels


@dataclass(frozen=True)
class Converted:
    """The compiled hls4ml model, its project folder, whether it records per-layer outputs, its compile time."""

    hls_model: Any
    project_dir: Path
    traced: bool
    compile_seconds: float


def run(trial: TrialDir, out: Path) -> dict:
    """The convert stage: the trained model converted with the spec's hls settings and compiled, its emulation
    checked against the float model, then packaged as an emulator and exported as an HLS project."""
    if trial.spec().model.type == "binary":
        return export_binary(trial, out)
    import hls4ml  # slow to import: only when the stage runs; the steps that call it get it from here

    inputs = _load_inputs(trial, out)
    summary, converted = convert_model(hls4ml, trial, inputs, out)
    settings = trial.spec().quantize.retrain_head
    if settings is not None:  # the Brainwave recipe's last step: version 2 of the model
        summary["retrained"] = _retrain_and_convert(hls4ml, trial, inputs, converted, settings, out / RETRAINED)
    return summary


def convert_model(hls4ml: ModuleType, trial: TrialDir, inputs: Inputs, out: Path) -> tuple[dict, Converted]:
    """One model converted with the spec's settings and compiled, its emulation checked against it, packaged as
    an emulator and exported as an HLS project, all in ``out``. Returns the summary and the compiled model."""
    config, corrections = _configure(hls4ml, inputs)
    converted = _convert_and_compile(hls4ml, inputs, config, out)
    report, emulated = _fidelity_report(trial, inputs, converted, out)
    resources, timing = _write_and_check(inputs, converted, config, report, out)
    _package_emulator(inputs, converted, emulated, timing, hls4ml.__version__, out)
    _export_project(trial, inputs.hls, converted.project_dir, out)
    return _summary(trial, report, resources, corrections, timing, out), converted


def _retrain_and_convert(hls4ml: ModuleType, trial: TrialDir, inputs: Inputs, converted: Converted,
                         settings: RetrainHeadSpec, out: Path) -> dict:
    """quantize.retrainHead: the head retrained on the featurizer's outputs on the training set as the firmware
    just converted computes them (its vectorized emulation, bit-identical to hls4ml's C simulation), then the
    retrained model converted into ``out`` (convert/retrained) like the first."""
    from fpgaflow.emulation.project import load_project

    train_dir = trial.stage_dir("train")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        fast = load_project(converted.project_dir, PROJECT)
    except NotImplementedError as exc:
        raise StageError(f"quantize.retrainHead takes the featurizer's outputs from fpgaflow's vectorized emulator, "
                         f"which does not cover this network: {exc}") from exc
    trainset = np.load(train_dir / TRAINSET)
    x_train = Scaler.load(train_dir / "scaler.json").apply(trainset["x"])
    first = head_layers(inputs.model)[0].name
    features = fast.inputs_of(x_train, first)
    print(f"convert: retraining the head ({first} on) on the firmware's featurizer outputs of {len(features)} "
          f"training samples ({features.shape[1]} values each) for {settings.epochs} epochs", flush=True)
    retrained = retrain_head(train_dir / "model.keras", features, trainset["y"], settings, trial.spec().dataset.seed)
    retrained.model.save(out / "model.keras")
    model = keras_model.load_model(out / "model.keras")
    summary, _ = convert_model(hls4ml, trial, Inputs(model, inputs.hls, True, inputs.x, inputs.y), out)
    write_json(out / "history.json", retrained.history)
    summary.update(model=str((out / "model.keras").relative_to(trial.root)), head_from=first,
                   train_samples=len(features), epochs=settings.epochs,
                   head_accuracy_on_firmware_features={"before": retrained.accuracy_before,
                                                       "after": retrained.accuracy_after})
    return summary


def _load_inputs(trial: TrialDir, out: Path) -> Inputs:
    """The train stage's model, scaler and test set."""
    spec = trial.spec()
    train_dir = _trained(trial)
    model = keras_model.load_model(train_dir / "model.keras")
    quantized = keras_model.is_qat(model)
    scaler = Scaler.load(train_dir / "scaler.json")
    testset = np.load(train_dir / "testset.npz")
    x = scaler.apply(testset["x"][:EVALUATION_SAMPLES])
    y = testset["y"][:EVALUATION_SAMPLES]
    return Inputs(model, spec.hls, quantized, x, y)


def _trained(trial: TrialDir) -> Path:
    train_dir = trial.stage_dir("train")
    if not trial.done("train"):
        raise MissingArtifact(f"{train_dir} has no finished training; run the train stage first")
    return train_dir


BNN_NOTE = ("hls4ml 1.3 does not convert fpgaflow's binary layers (BinarizeInput, BinaryDense, SignActivation), so "
            "there is no emulation to check or serve: the hardware artifact is the BNN-PYNQ parameter folder {folder}, "
            "which BNN-PYNQ's LFC overlay loads (docs/exports.md); the fpga target is unavailable for this trial")


def export_binary(trial: TrialDir, out: Path) -> dict:
    """A binary model's convert stage: its BNN-PYNQ parameter folder (out/bnn, folded by hls.layers' pe and
    simd, LFC's by default) with the data set's class names, and a result saying that this is all there is."""
    spec = trial.spec()
    train_dir = _trained(trial)
    model = keras_model.load_model(train_dir / "model.keras")
    classes = [str(c) for c in read_json(train_dir / "dataset.json").get("classes", [])] or None
    manifest = export.export_bnn(model, out / "bnn", bnn_folding(spec.model.layers, spec.hls.layers), classes)
    note = BNN_NOTE.format(folder=out / "bnn")
    print(f"convert: {note}")
    return {"export": "bnn", "note": note, "folder": "bnn",
            "layers": [{k: e[k] for k in ("name", "mw", "mh", "pe", "simd", "wmem", "tmem")} for e in manifest["layers"]]}


def _configure(hls4ml: ModuleType, inputs: Inputs) -> tuple[dict, list[dict]]:
    """hls4ml's per-layer configuration with the spec's settings (``hls_config``), its invalid reuse factors
    corrected (each correction printed), and the list of corrections."""
    hls, model = inputs.hls, inputs.model
    try:
        base = hls4ml.utils.config_from_keras_model(
            model, granularity="name", default_precision=hls.precision, default_reuse_factor=hls.reuse_factor,
            backend=hls.backend,
        )
    except Exception as exc:  # a layer hls4ml has no handler for fails here, before the conversion
        raise unconvertible(model, exc, hls4ml.__version__, hls.io_type) from exc
    config = hls_config(base, hls, n_classes=int(model.outputs[0].shape[-1]), quantized=inputs.quantized)
    backend = hls4ml.backends.get_backend(hls.backend)
    corrections = correct_reuse_factors(config, multiplier_shapes(model), backend)
    for c in corrections:
        print(f"convert: reuse factor {c['asked']} of {c['layer']} ({c['shape'][0]}x{c['shape'][1]}) "
              f"is not valid by hls4ml's rule; {c['used']} is used instead")
    return config, corrections


def _convert_and_compile(hls4ml: ModuleType, inputs: Inputs, config: dict, out: Path) -> Converted:
    """The model converted into a fresh hls4ml project (out/hls4ml_prj), traced per layer where the design is
    io_parallel, and compiled into its C simulation."""
    hls = inputs.hls
    project_dir = out / "hls4ml_prj"
    shutil.rmtree(project_dir, ignore_errors=True)
    try:
        hls_model = hls4ml.converters.convert_from_keras_model(
            inputs.model,
            hls_config=config,
            output_dir=str(project_dir),
            project_name=PROJECT,
            backend=hls.backend,
            part=hls.part,
            clock_period=hls.clock_period,
            io_type=hls.io_type,
        )
    except Exception as exc:  # hls4ml raises ValueError, KeyError, AssertionError, bare Exception
        raise unconvertible(inputs.model, exc, hls4ml.__version__, hls.io_type) from exc
    traced = hls.io_type == "io_parallel"  # hls4ml's trace of io_stream designs empties their streams
    if traced:
        trace.enable_trace(hls_model)  # per-layer outputs from the same compile (C simulation only)
    started = time.perf_counter()
    hls_model.compile()
    return Converted(hls_model, project_dir, traced, time.perf_counter() - started)


def _fidelity_report(trial: TrialDir, inputs: Inputs, converted: Converted,
                     out: Path) -> tuple[dict, np.ndarray]:
    """The float model against the emulation on the test set (``fidelity``), with how it was emulated, the
    per-class AUCs of both, bit-exactness for a QAT model and, when traced, the per-layer trace, its diagnosis
    and out/profiling.png. Returns the report and the emulated outputs."""
    model, x, y = inputs.model, inputs.x, inputs.y
    reference = model.predict(x, batch_size=4096, verbose=0)
    emulated, emulation = emulate(converted.project_dir, converted.hls_model.predict, x)
    emulated = emulated.reshape(reference.shape)
    report = fidelity(reference, emulated, y)
    report.update(
        {
            "emulation": emulation,
            "emulation_samples_per_second": emulation["samples_per_second"],
            "compile_seconds": round(converted.compile_seconds, 2),
            "threshold": inputs.hls.min_agreement,
        }
    )
    dataset = (trial.result("train") or {}).get("dataset") or {}
    classes = dataset.get("classes") or [str(i) for i in range(reference.shape[1])]
    report["per_class_auc"] = {"float": per_class_auc(y, reference, classes),
                               "emulated": per_class_auc(y, emulated, classes)}
    if inputs.quantized:
        report["bit_exact"] = bool(np.array_equal(reference, emulated))
    if converted.traced:
        probe = x[: trace.TRACE_SAMPLES]
        report["layers"] = trace.layer_trace(model, converted.hls_model, probe)
        report["diagnosis"] = trace.diagnose(report["layers"])
        trace.profiling_plot(model, converted.hls_model, probe, out / "profiling.png")
    return report, emulated


def _write_and_check(inputs: Inputs, converted: Converted, config: dict, report: dict,
                     out: Path) -> tuple[dict, dict]:
    """estimate.json, fidelity.json and hls_config.json written; then the fidelity checked (``_check``, and
    bit-exactness for a QAT model), raising FidelityError; then timing.json. Returns the estimate and the
    timing."""
    hls = inputs.hls
    resources = estimate_resources(layers_from_hls_model(converted.hls_model), hls.clock_period, hls.io_type,
                                   hls.backend)
    write_json(out / "estimate.json", resources)
    write_json(out / "fidelity.json", report)
    write_json(out / "hls_config.json", config)
    _check(report, hls)
    if inputs.quantized and not report["bit_exact"]:
        raise FidelityError("the emulation differs from the QAT model's own outputs by up to "
                            f"{report['max_abs_error']:g}: hls4ml should convert an HGQ2 model bit-exactly")
    timing = device_timing(resources)
    write_json(out / "timing.json", timing)
    return resources, timing


def _package_emulator(inputs: Inputs, converted: Converted, emulated: np.ndarray, timing: dict,
                      hls4ml_version: str, out: Path) -> None:
    """out/emulator: the compiled C simulation's library with its manifest; a fresh load of it must reproduce
    the emulated outputs just checked (FidelityError otherwise)."""
    hls, project_dir = inputs.hls, converted.project_dir
    emulator_dir = out / "emulator"
    shutil.rmtree(emulator_dir, ignore_errors=True)
    emulator_dir.mkdir()
    stamp = converted.hls_model.config.get_config_value("Stamp")
    library = shutil.copy2(project_dir / "firmware" / f"{PROJECT}-{stamp}.so",
                           emulator_dir / f"lib{PROJECT}-{stamp}.so")
    write_manifest(
        emulator_dir,
        Path(library),
        PROJECT,
        input_size=math.prod(inputs.x.shape[1:]),
        output_size=emulated.shape[1],
        info={
            "input_shape": list(inputs.x.shape[1:]),
            "weights_dir": str((project_dir / "firmware" / "weights").resolve()),
            "precision": hls.precision,
            "reuse_factor": hls.reuse_factor,
            "strategy": hls.strategy,
            "io_type": hls.io_type,
            "clock_period_ns": hls.clock_period,
            "hls4ml_version": hls4ml_version,
            "timing": timing,
        },
    )
    # The artifact must reproduce the check just made, from a fresh load.
    probe = inputs.x[:256]
    if not np.array_equal(load_emulator(emulator_dir).predict(probe), emulated[: len(probe)]):
        raise FidelityError("the emulator artifact does not reproduce hls4ml's predictions")


def _export_project(trial: TrialDir, hls: HLSSpec, project_dir: Path, out: Path) -> None:
    """What a user with the vendor tools synthesizes: exactly the project that was emulated, plus build.sh,
    packed as out/hls4ml_prj.tar.gz."""
    export.write_build_script(project_dir, PROJECT, hls.part, hls.clock_period, hls.backend)
    arcname = f"{trial.experiment}-{trial.root.name}-hls4ml_prj"
    export.pack_project(project_dir, out / "hls4ml_prj.tar.gz", arcname)


def _summary(trial: TrialDir, report: dict, resources: dict, corrections: list[dict], timing: dict,
             out: Path) -> dict:
    """The stage's result: the fidelity report without its per-layer trace (that is in fidelity.json), the
    estimate's total, the reuse-factor corrections, the timing and where the artifacts are."""
    return {
        "fidelity": {k: v for k, v in report.items() if k != "layers"},
        "estimate": resources["total"],
        "reuse_factor_corrections": [{k: c[k] for k in ("layer", "asked", "used", "shape")}
                                     for c in corrections],
        "timing": {k: timing[k] for k in ("latency_cycles", "ii_cycles", "latency_ns", "ii_ns", "unmodelled")},
        "project": str((out / "hls4ml_prj").relative_to(trial.root)),
        "tarball": str((out / "hls4ml_prj.tar.gz").relative_to(trial.root)),
        "emulator": str((out / "emulator").relative_to(trial.root)),
    }
