"""The emulator benchmark of ``make bench``: ``python -m fpgaflow.converter.emubench [--trial-dir D]``.

Samples per second of hls4ml's compiled C simulation (one C call per sample, as ``hls_model.predict``)
and of fpgaflow's vectorized emulator (converter/fastemu.py) on the same batch of the trial's test set,
their ratio, and the median single-sample latency of each; the outputs are checked to be the same bits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_TRIAL = Path(".cache/bench/experiments/bench-serving/t00")
BATCH = 10_000
SINGLE = 2000


def rate(predict, x: np.ndarray, repeats: int = 3) -> float:
    """Samples per second of ``predict`` on ``x``: the best of ``repeats`` runs."""
    best = min(_timed(predict, x) for _ in range(repeats))
    return len(x) / best


def single_latency_us(predict, x: np.ndarray, n: int = SINGLE) -> float:
    """Median microseconds of one-sample calls."""
    times = [_timed(predict, x[i % len(x): i % len(x) + 1]) for i in range(n)]
    return float(np.median(times) * 1e6)


def _timed(predict, x: np.ndarray) -> float:
    started = time.perf_counter()
    predict(x)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-dir", type=Path, default=DEFAULT_TRIAL)
    args = parser.parse_args(argv)
    convert = args.trial_dir / "convert"
    if not (convert / "emulator").is_dir():
        print(f"emubench: {args.trial_dir} has no converted emulator; `make bench` makes it", file=sys.stderr)
        return 2
    from fpgaflow.converter.emulator import load_emulator
    from fpgaflow.converter.fastemu import load_fast_emulator
    from fpgaflow.preprocess import Scaler

    reference, fast = load_emulator(convert / "emulator"), load_fast_emulator(convert)
    x = np.load(args.trial_dir / "train" / "testset.npz")["x"]
    x = Scaler.load(args.trial_dir / "train" / "scaler.json").apply(np.resize(x, (BATCH, x.shape[1]))).astype(np.float32)
    same = np.array_equal(reference.predict(x), fast.predict(x))
    slow_rate, fast_rate = rate(reference.predict, x), rate(fast.predict, x)
    slow_one, fast_one = single_latency_us(reference.predict, x), single_latency_us(fast.predict, x)
    print(f"emulators on {BATCH} samples of {args.trial_dir} (outputs bit-identical: {same})")
    print(f"  hls4ml C simulation   {slow_rate:12,.0f} samples/s   one sample {slow_one:8.1f} us")
    print(f"  vectorized emulator   {fast_rate:12,.0f} samples/s   one sample {fast_one:8.1f} us")
    print(f"  ratio at batch {BATCH}: {fast_rate / slow_rate:.1f}x; one sample: {slow_one / fast_one:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
