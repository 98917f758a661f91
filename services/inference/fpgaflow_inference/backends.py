"""Back ends behind one interface: scaled float32 batch in, class probabilities out."""

from __future__ import annotations

import contextlib
import io
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from fpgaflow.emulation.timing import device_seconds
from fpgaflow.errors import TargetUnavailable
from fpgaflow.trial import ModelVersion


class Backend(Protocol):
    target: str
    description: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def device_seconds(self, batch: int) -> float | None:
        """Modelled time of the batch on the target device, where a model of it exists."""
        ...


class KerasBackend:
    """The trained Keras model on one TensorFlow device, called through a compiled tf.function."""

    def __init__(self, model_path: Path, target: str, device: str, threads: int = 1):
        import tensorflow as tf

        from fpgaflow.keras_model import load_model  # float and fixed-point (HGQ2) models alike

        try:  # before TensorFlow's runtime starts (it does with the model's first op)
            # ``threads`` per op, and the ops of one call in turn (inter-op 1): handing a model's microsecond ops
            # between TensorFlow's thread pools costs more CPU than it saves (45 us of 200 per call, jet tagger)
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already started in this process (a test's): its pools stay as they are
            pass
        self.target, self._device = target, device
        with tf.device(device):
            self.model = load_model(model_path)
        spec = tf.TensorSpec([None, *self.model.inputs[0].shape[1:]], tf.float32)
        # The traced graph called directly: tf.function's dispatch costs more than this model's compute.
        self._fn = tf.function(lambda x: self.model(x, training=False), input_signature=[spec]).get_concrete_function()
        self._tf = tf
        self.description = f"TensorFlow {tf.__version__} on {device}"

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self._tf.device(self._device):
            return self._fn(self._tf.constant(x)).numpy()

    def device_seconds(self, batch: int) -> float | None:
        return None  # the measured compute time is the device time


SELF_CHECK_SAMPLES = 512


def self_check_inputs(shape: tuple[int, ...]) -> np.ndarray:
    """SELF_CHECK_SAMPLES samples of ``shape`` (scaled features): normal values in four quarters of growing
    spread (0.5 to 64 standard deviations), reaching past any range a model was trained on."""
    rng = np.random.default_rng(0)
    spread = np.repeat([0.5, 2.0, 8.0, 64.0], SELF_CHECK_SAMPLES // 4).reshape(-1, *(1,) * len(shape))
    return (rng.standard_normal((SELF_CHECK_SAMPLES, *shape)) * spread).astype(np.float32)


# LiteRT's float kernels sum in another order than TensorFlow's: its answers (probabilities) may differ in the
# last bits, never by more than this on the self-check
LITERT_TOLERANCE = 1e-5


class _LiteRunner:
    """One LiteRT interpreter (not thread-safe: one per compute thread), resized when a batch's shape changes."""

    def __init__(self, model: bytes, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=model, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, x.shape, strict=True)
            self._interpreter.allocate_tensors()
            self._shape = x.shape
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)  # a copy: the next call does not overwrite it


class LiteRTBackend:
    """The trained Keras model converted at load by TensorFlow's converter and run by LiteRT's interpreter (its
    XNNPACK kernels) on the CPU. A call costs microseconds where the traced TensorFlow function's costs 0.1 to
    0.4 ms, which for the small networks of this field is most of the time. ``cpu_backend`` uses it only where
    the conversion covers the model and the answers agree with TensorFlow's on a self-check, else TensorFlow."""

    target = "cpu"

    def __init__(self, model: bytes, threads: int, description: str):
        self._model, self._threads, self.description = model, threads, description
        self._local = threading.local()

    def predict(self, x: np.ndarray) -> np.ndarray:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = _LiteRunner(self._model, self._threads)
        return runner(np.ascontiguousarray(x, dtype=np.float32))

    def device_seconds(self, batch: int) -> float | None:
        return None  # the measured compute time is the device time


def cpu_backend(model_path: Path, threads: int = 1) -> Backend:
    """The cpu target: LiteRT where it serves the model with TensorFlow's answers, else TensorFlow itself; the
    description says which, and why not LiteRT."""
    reference = KerasBackend(model_path, "cpu", "/CPU:0", threads)
    lite, why_not = litert_for(reference, threads)
    if lite is None:
        reference.description += f" (not LiteRT: {why_not})"
        return reference
    return lite


def litert_for(reference: KerasBackend, threads: int) -> tuple[LiteRTBackend | None, str]:
    """The LiteRT back end of ``reference``'s model, checked against it on SELF_CHECK_SAMPLES samples, or None
    and the reason."""
    from fpgaflow.keras_model import is_qat

    if is_qat(reference.model):
        return None, "a quantization-aware model computes in float64, its fixed-point values exactly; LiteRT's CPU kernels are float32"
    try:
        from importlib.metadata import version

        import tensorflow as tf

        # Keras prints the signature of the SavedModel it exports for the converter. Swapping sys.stdout is
        # process-wide, which is safe here: a server loads every model version before it serves or prints
        with contextlib.redirect_stdout(io.StringIO()):
            model = tf.lite.TFLiteConverter.from_keras_model(reference.model).convert()
        lite = LiteRTBackend(model, threads, f"LiteRT {version('ai-edge-litert')} (XNNPACK) on the CPU, "
                                             f"converted at load by TensorFlow {tf.__version__}'s converter")
        x = self_check_inputs(tuple(reference.model.inputs[0].shape[1:]))
        diff = float(np.max(np.abs(lite.predict(x) - reference.predict(x))))
    except Exception as exc:  # the converter and the interpreter raise what they like on a model they cannot take
        return None, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    if not diff <= LITERT_TOLERANCE:  # NaN too
        return None, f"its answers differed from TensorFlow's by {diff:.3g} on the self-check, more than {LITERT_TOLERANCE:g}"
    lite.description += f"; within {diff:.1g} of TensorFlow's answers on a {len(x)}-sample self-check"
    return lite, ""


class EmulatorBackend:
    """The firmware's bit-exact emulation: fpgaflow's vectorized emulator (converter/fastemu.py) where it
    covers the network and reproduces hls4ml's compiled C simulation on a self-check at load, else that
    C simulation itself. Wall time is not device time."""

    target = "fpga"

    def __init__(self, emulator_dir: Path):
        from fpgaflow.emulation.library import load_emulator

        self._emulator = load_emulator(emulator_dir)  # hls4ml's library: the reference, and the fallback
        info = self._emulator.info
        self._fast, self.emulation = self._vectorized(emulator_dir.parent)
        self.timing: dict | None = info.get("timing")
        self.description = (
            f"{self.emulation} of the firmware ({info.get('precision')}, reuse {info.get('reuse_factor')}, "
            f"{info.get('strategy')}, hls4ml {info.get('hls4ml_version')}) on one CPU core; measured times are "
            "emulation wall time, not device latency"
        )
        if self.timing:
            self.description += (
                f"; modelled device latency {self.timing['latency_ns']:g} ns, II {self.timing['ii_ns']:g} ns "
                f"at {self.timing['clock_period_ns']:g} ns clock"
            )
            if self.timing.get("unmodelled"):
                self.description += f" (leaving out {', '.join(self.timing['unmodelled'])}, which it does not model)"

    def _vectorized(self, convert_dir: Path):
        from fpgaflow.emulation.project import load_fast_emulator

        try:
            fast = load_fast_emulator(convert_dir)
        except NotImplementedError as exc:
            return None, f"hls4ml C simulation (the vectorized emulator does not cover: {exc})"
        x = self_check_inputs((self._emulator.input_size,))
        if not np.array_equal(fast.predict(x).view(np.uint32), self._emulator.predict(x).view(np.uint32)):
            return None, "hls4ml C simulation (the vectorized emulator differed from it on the self-check)"
        exact = sum(path == "float64" for path in fast.paths.values())
        return fast, (f"vectorized emulation ({exact} of {len(fast.layers)} layers on the float64 path; the same bits "
                      "as hls4ml's C simulation, checked at load)")

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self._emulator if self._fast is None else self._fast).predict(x)

    def device_seconds(self, batch: int) -> float | None:
        return None if self.timing is None else device_seconds(self.timing, batch)


def visible_gpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def load_backend(version: ModelVersion, target: str, threads: int = 1) -> Backend:
    """The back end of ``target`` for one version of a trial's model (``fpgaflow.trial.model_versions``); cpu and
    gpu use ``threads`` per call (LiteRT's interpreter, TensorFlow's ops)."""
    if target == "cpu":
        return cpu_backend(version.model, threads)
    if target == "gpu":
        gpus = visible_gpus()
        if not gpus:
            raise TargetUnavailable("no GPU is visible to TensorFlow on this machine (tf.config.list_physical_devices('GPU') is empty)")
        return KerasBackend(version.model, "gpu", "/GPU:0", threads)
    if target == "fpga":
        converted = version.result()
        if converted.get("export") == "bnn":  # a binary model: a BNN-PYNQ parameter folder, no emulator
            raise TargetUnavailable(converted.get("note") or "the convert stage wrote only a BNN-PYNQ export")
        return EmulatorBackend(version.convert / "emulator")
    raise ValueError(f"unknown target {target!r}")
