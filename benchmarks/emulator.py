"""The emulator benchmark of ``make bench``: ``python -m benchmarks.emulator [--trial-dir D] [--out O]``.

Samples per second of hls4ml's compiled C simulation (one C call per sample, as ``hls_model.predict``)
and of fpgaflow's vectorized emulator (converter/fastemu.py) on the same batches of the trial's test set,
at batch sizes from 1 to 10,000, their ratio, and the median single-sample latency of each; the outputs
are checked to be the same bits. Writes emubench.csv and emubench.png (samples/s against batch size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_TRIAL = Path(".cache/bench/experiments/bench-serving/t00")
DEFAULT_OUT = Path(".cache/bench/emulator")
BATCH = 10_000
BATCH_SIZES = (1, 10, 100, 1000, BATCH)
SINGLE = 2000


def rate(predict, x: np.ndarray) -> float:
    """Samples per second of ``predict`` on all of ``x`` in one call: the best of 3 runs."""
    return batch_rate(predict, x, len(x), len(x))


def single_latency_us(predict, x: np.ndarray, n: int = SINGLE) -> float:
    """Median microseconds of one-sample calls."""
    times = [_timed(predict, x[i % len(x): i % len(x) + 1]) for i in range(n)]
    return float(np.median(times) * 1e6)


def batch_rate(predict, x: np.ndarray, batch: int, budget: int = BATCH) -> float:
    """Samples per second of ``predict`` called on consecutive batches of ``batch`` rows covering
    ``budget`` samples (the best of 3 passes)."""
    chunks = [x[i:i + batch] for i in range(0, min(budget, len(x)) - batch + 1, batch)]

    def run(_):
        for chunk in chunks:
            predict(chunk)
    return len(chunks) * batch / min(_timed(run, None) for _ in range(3))


def _timed(predict, x) -> float:
    started = time.perf_counter()
    predict(x)
    return time.perf_counter() - started


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threads unknown"
    return ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas")


def single_threaded_rate(predict, x: np.ndarray) -> float | None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    with threadpool_limits(1, user_api="blas"):
        return rate(predict, x)


def write_outputs(rows: list[dict], out: Path, title: str) -> None:
    from fpgaflow.plots import pyplot, write_csv

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "emubench.csv", list(rows[0]), [list(r.values()) for r in rows])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sizes = [r["batch"] for r in rows]
    ax.plot(sizes, [r["hls4ml_samples_per_s"] for r in rows], marker="o", label="hls4ml C simulation")
    ax.plot(sizes, [r["vectorized_samples_per_s"] for r in rows], marker="o", label="fpgaflow vectorized emulator")
    for r in rows:
        ax.annotate(f"{r['ratio']:.0f}x" if r["ratio"] >= 10 else f"{r['ratio']:.1f}x",
                    (r["batch"], r["vectorized_samples_per_s"]), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size [samples per call]")
    ax.set_ylabel("samples per second (one process)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "emubench.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-dir", type=Path, default=DEFAULT_TRIAL)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    convert = args.trial_dir / "convert"
    if not (convert / "emulator").is_dir():
        print(f"emubench: {args.trial_dir} has no converted emulator; `make bench` makes it", file=sys.stderr)
        return 2
    from fpgaflow.emulation.library import load_emulator
    from fpgaflow.emulation.project import load_fast_emulator
    from fpgaflow.preprocess import Scaler

    reference, fast = load_emulator(convert / "emulator"), load_fast_emulator(convert)
    x = np.load(args.trial_dir / "train" / "testset.npz")["x"]
    x = Scaler.load(args.trial_dir / "train" / "scaler.json").apply(np.resize(x, (BATCH, *x.shape[1:]))).astype(np.float32)
    same = np.array_equal(reference.predict(x).view(np.uint32), fast.predict(x).view(np.uint32))
    blas = blas_threads()
    print(f"emulators on {BATCH} samples of {args.trial_dir} (outputs bit-identical: {same}; "
          f"layers on the float64 path: {sum(p == 'float64' for p in fast.paths.values())} of {len(fast.layers)}; BLAS: {blas})")
    rows = []
    print(f"  {'batch':>6}  {'hls4ml C sim [samples/s]':>25}  {'vectorized [samples/s]':>23}  {'ratio':>7}")
    for batch in BATCH_SIZES:
        budget = BATCH if batch > 10 else 2000  # the C simulation at 60 us a sample: keep small batches short
        slow, quick = batch_rate(reference.predict, x, batch, budget), batch_rate(fast.predict, x, batch, budget)
        rows.append({"batch": batch, "hls4ml_samples_per_s": round(slow), "vectorized_samples_per_s": round(quick),
                     "ratio": round(quick / slow, 2)})
        print(f"  {batch:>6}  {slow:>25,.0f}  {quick:>23,.0f}  {quick / slow:>6.1f}x")
    slow_one, fast_one = single_latency_us(reference.predict, x), single_latency_us(fast.predict, x)
    print(f"  one sample, median of {SINGLE} calls: hls4ml {slow_one:.1f} us, vectorized {fast_one:.1f} us "
          f"({slow_one / fast_one:.2f}x)")
    print(f"  ratio at batch {BATCH}: {rows[-1]['ratio']:.1f}x")
    one_thread = single_threaded_rate(fast.predict, x)
    if one_thread is not None:  # hls4ml's C simulation uses one core; so may the matrix products
        print(f"  with BLAS limited to one thread: {one_thread:,.0f} samples/s at batch {BATCH}, "
              f"{one_thread / rows[-1]['hls4ml_samples_per_s']:.1f}x")
    write_outputs(rows, args.out, f"{args.trial_dir.parent.name}: emulators against batch size")
    print(f"  results: {args.out}/emubench.csv, emubench.png")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
