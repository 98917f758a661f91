"""The FPGA emulator artifact: hls4ml's compiled C simulation of the firmware, loaded through ctypes.

The converter writes ``convert/emulator/`` (the shared library and ``emulator.json``); the `fpga`
serving target loads it with :func:`load_emulator`. Calls go through the same exported function,
one sample at a time, with the same float32 buffers as ``hls_model.predict``, so the outputs are the
same bits.
"""

from __future__ import annotations

import ctypes
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.ctypeslib as npc

from fpgaflow.errors import MissingArtifact, RequestError

MANIFEST = "emulator.json"


@dataclass
class Emulator:
    library: Path
    function: str
    input_size: int
    output_size: int
    info: dict

    def __post_init__(self):
        self._lib = ctypes.PyDLL(str(self.library))
        self._fn = getattr(self._lib, self.function)
        self._fn.restype = None
        self._fn.argtypes = [npc.ndpointer(ctypes.c_float, flags="C_CONTIGUOUS")] * 2
        # The C simulation keeps static state (weights loaded on first call): one caller at a time.
        self._lock = threading.Lock()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a batch of already-scaled inputs, shape (n, input_size) -> (n, output_size)."""
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.input_size:
            raise RequestError(f"expected {self.input_size} values per sample, got {x.shape[1]}")
        out = np.zeros((len(x), self.output_size), dtype=np.float32)
        with self._lock:
            for i in range(len(x)):  # rows of C-contiguous arrays are contiguous: no copies per sample
                self._fn(x[i], out[i])
        return out


def write_manifest(emulator_dir: Path, library: Path, project: str, input_size: int, output_size: int, info: dict) -> None:
    doc = {
        "kind": "hls4ml-csim",
        "library": library.name,
        "function": f"{project}_float",
        "input_size": input_size,
        "output_size": output_size,
        **info,
    }
    (emulator_dir / MANIFEST).write_text(json.dumps(doc, indent=1))


def load_emulator(emulator_dir: str | Path) -> Emulator:
    emulator_dir = Path(emulator_dir)
    try:
        doc = json.loads((emulator_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise MissingArtifact(f"{emulator_dir / MANIFEST} is missing; run the convert stage first") from None
    weights = Path(doc["weights_dir"])
    if not weights.is_dir():
        # hls4ml's C simulation reads its weights from this folder on first call and exits the process
        # when it is missing; refuse cleanly instead.
        raise MissingArtifact(f"the emulator's weights folder {weights} is missing (was the trial folder moved?)")
    return Emulator(emulator_dir / doc["library"], doc["function"], doc["input_size"], doc["output_size"], doc)
