"""The KServe peer of the serving benchmark: a trial's jet tagger served by KServe's Python model server.

Run with the python of the venv that ``benchmarks/kserve_venv.sh`` builds (not fpgaflow's)::

    .cache/bench/kserve-venv/bin/python benchmarks/kserve_peer.py --trial-dir T --port P --grpc-port G

A ``kserve.Model`` whose ``load()`` loads the trial's ``train/model.keras`` and ``train/scaler.json`` and whose
``predict()`` answers Open Inference Protocol v2 requests (``InferRequest`` in, ``InferResponse`` out) with
what fpgaflow's ``cpu`` target computes for raw features: standardization as ``fpgaflow.preprocess.Scaler``
does it (float64, then float32), then the Keras model through a compiled ``tf.function`` (its concrete
function called directly, as fpgaflow's KerasBackend does; fpgaflow's cpu target runs the model's LiteRT
conversion instead, within 1e-5 of these answers). Same tensor names and datatypes as fpgaflow's v2
endpoint: input ``features`` FP32 [batch, n_features], output ``probabilities`` FP32 [batch, n_classes];
the model's name is the experiment's (the trial folder's parent), as fpgaflow names it.

``kserve.ModelServer`` serves it: gRPC (v2) on ``--grpc-port``, REST on ``--port``; one process
(``--workers 1``), KServe's defaults otherwise, except that its per-request INFO log lines (the gRPC
interceptor's "grpc method" line and the latency line) are off: the peer is measured serving, not logging.
``fpgaflow/keras_model.py`` is loaded by path (it needs only Keras and numpy) so that fpgaflow's own Keras
layers load; this script imports nothing else of fpgaflow.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KSERVE_LOGLEVEL", "WARNING")  # KServe's own logger; read when kserve is imported

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

KERAS_MODEL_PY = Path(__file__).resolve().parent.parent / "fpgaflow" / "keras_model.py"
INPUT_NAME = "features"  # fpgaflow.trial.INPUT_NAME
OUTPUT_NAME = "probabilities"  # fpgaflow.trial.OUTPUT_NAME


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-dir", type=Path, required=True, help="a trained trial (train/model.keras, train/scaler.json)")
    parser.add_argument("--port", type=int, default=8080, help="KServe's REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="KServe's gRPC port, v2 (default 8081)")
    parser.add_argument("--model-name", help="the served model's name (default: the experiment's, as fpgaflow serves it)")
    parser.add_argument("--workers", type=int, default=1, help="KServe's --workers (default 1)")
    parser.add_argument("--latency-logging", action="store_true",
                        help="keep KServe's per-request log lines (its default; off here unless asked)")
    return parser.parse_args(argv)


def load_keras_model_module(path: Path = KERAS_MODEL_PY):
    """fpgaflow/keras_model.py, by path: registers fpgaflow's Keras layers and gives its ``load_model``."""
    spec = importlib.util.spec_from_file_location("fpgaflow_keras_model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_model_class():
    """The kserve.Model subclass (defined after kserve is imported)."""
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class JetTagger(kserve.Model):
        """The trial's Keras model behind KServe's v2 data plane."""

        def __init__(self, name: str, trial_dir: Path):
            super().__init__(name)
            self.trial_dir = trial_dir
            self.ready = False

        def load(self) -> bool:
            import tensorflow as tf

            train = self.trial_dir / "train"
            model = load_keras_model_module().load_model(train / "model.keras")
            doc = json.loads((train / "scaler.json").read_text())
            self._mean = np.asarray(doc["mean"], dtype=np.float64)
            self._scale = np.asarray(doc["scale"], dtype=np.float64)
            self._sample_shape = tuple(int(d) for d in doc["shape"]) if "shape" in doc else (len(doc["features"]),)
            spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
            self._model = model
            self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec]).get_concrete_function()
            self._tf = tf
            self.predict_array(np.zeros((1, *self._sample_shape), dtype=np.float32))  # traced and warm
            self.ready = True
            return self.ready

        def predict_array(self, raw: np.ndarray) -> np.ndarray:
            """Raw features [batch, *sample shape] -> class probabilities, float32."""
            shape = raw.shape
            flat = np.asarray(raw, dtype=np.float64).reshape(shape[0], -1)
            x = ((flat - self._mean) / self._scale).astype(np.float32).reshape(shape)
            return self._fn(self._tf.constant(x)).numpy()

        def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
            tensor = payload.get_input_by_name(INPUT_NAME)
            if tensor is None:
                raise InvalidInput(f"the request has no input {INPUT_NAME!r}")
            if tensor.datatype != "FP32":
                raise InvalidInput(f"input {INPUT_NAME!r} must be FP32, got {tensor.datatype}")
            raw = tensor.as_numpy()
            if raw.shape == self._sample_shape:
                raw = raw.reshape(1, *self._sample_shape)
            if raw.shape[1:] != self._sample_shape or raw.shape[0] == 0:
                raise InvalidInput(f"input {INPUT_NAME!r} must have shape [batch, {', '.join(map(str, self._sample_shape))}],"
                                   f" got {list(raw.shape)}")
            y = np.ascontiguousarray(self.predict_array(raw), dtype="<f4")
            output = InferOutput(name=OUTPUT_NAME, shape=list(y.shape), datatype="FP32")
            output.set_data_from_numpy(y, binary_data=payload.use_binary_outputs)
            return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[output],
                                 use_binary_outputs=payload.use_binary_outputs)

    return JetTagger


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trial = args.trial_dir.resolve()
    name = args.model_name or trial.parent.name
    sys.argv = sys.argv[:1]  # kserve parses the command line when imported; it must not see ours
    import kserve

    model = make_model_class()(name, trial)
    model.load()
    server = kserve.ModelServer(http_port=args.port, grpc_port=args.grpc_port, workers=args.workers,
                                enable_latency_logging=args.latency_logging)
    if not args.latency_logging:
        import logging

        logging.getLogger("kserve").setLevel(logging.WARNING)  # the gRPC interceptor logs each call at INFO
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    print(f"kserve peer: {name} from {trial} on gRPC :{args.grpc_port}, REST :{args.port} (pid {os.getpid()})", flush=True)
    server.start([model])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
