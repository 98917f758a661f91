"""The trainer's overhead against a plain ``model.fit``: ``python -m benchmarks.trainer_overhead`` (``make bench``).

Both sides train the same model (the spec's, same seed) on the same data for the same epochs; the
trainer adds everything it does around the fit: history rows with their statistics, diagnostics,
a checkpoint every epoch, live metrics on a port, host sampling. Runs come in pairs whose order
alternates (plain then trainer, trainer then plain, ...) from a cleared Keras session, so that drift
and the machine's warmth hit both alike; the figure is the median of the paired overheads, the ratio
of the medians beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from fpgaflow.cli import DEFAULT_HOME
from fpgaflow.preprocess import Scaler
from fpgaflow.processes import free_port
from fpgaflow.spec import DatasetSpec, ExperimentSpec
from fpgaflow.trial import TrialDir, write_json
from fpgaflow_trainer.datasets import cache_folder, load_dataset, progress_printer
from fpgaflow_trainer.model import build_model
from fpgaflow_trainer.stage import run
from fpgaflow_trainer.train import validation_split

BUDGET = 0.03  # the trainer may cost at most 3 % over a plain fit (median)


SIMULATED = 20_000  # jets simulated (once, into the data-set cache) and drawn from for the timed set


def jets_file(samples: int, folder: Path) -> Path:
    """``samples`` jets drawn with replacement from the simulated set of SIMULATED jets, as an .npz file: a set of
    the public one's size for timing; the overhead does not depend on the physics."""
    data = load_dataset(DatasetSpec(name="jets", samples=SIMULATED, seed=42), cache_folder(Path(DEFAULT_HOME)),
                        progress_printer("jets"))
    x, y = np.concatenate([data.x_train, data.x_test]), np.concatenate([data.y_train, data.y_test])
    drawn = np.random.default_rng(0).integers(0, len(x), samples)
    np.savez(folder / "jets.npz", x=x[drawn], y=y[drawn])
    return folder / "jets.npz"


def bench_spec(path: Path, epochs: int, max_samples: int | None = None) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "dataset": {"name": "jets", "path": str(path), "maxSamples": max_samples, "seed": 42},
        "model": {"type": "mlp", "layers": [64, 32, 32]},
        "train": {"epochs": epochs, "batchSize": 1024},
    })


def plain_fit_seconds(spec: ExperimentSpec, data, scaler: Scaler) -> float:
    """What a user would write without fpgaflow: build, compile, fit; only the fit is timed."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.dataset.seed)
    x = scaler.apply(data.x_train)
    split = validation_split(len(x), spec.train.validation_fraction)
    model = build_model(spec.model, x.shape[1:], len(data.classes))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.train.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x[:split], data.y_train[:split], epochs=spec.train.epochs, batch_size=spec.train.batch_size,
              validation_data=(x[split:], data.y_train[split:]), verbose=0)
    return time.perf_counter() - started


def trainer_fit_seconds(spec: ExperimentSpec, folder: Path) -> tuple[float, float]:
    """The train stage on a fresh trial folder: (its timed fit with every callback, the whole stage)."""
    keras.backend.clear_session()
    trial = TrialDir.create(folder, "bench-trainer", folder.name, {}, spec)
    out = trial.stage_dir("train")
    out.mkdir(parents=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch lines; the figures are printed below
        result = run(trial, out, metrics_address=("127.0.0.1", free_port()))
    return result["train_seconds"], time.perf_counter() - started


def overhead(rows: list[dict]) -> dict:
    plain = statistics.median(r["plain_s"] for r in rows)
    trainer = statistics.median(r["trainer_s"] for r in rows)
    return {"plain_median_s": round(plain, 3), "trainer_median_s": round(trainer, 3),
            "overhead": round(statistics.median(r["trainer_s"] / r["plain_s"] - 1 for r in rows), 4),
            "ratio_of_medians": round(trainer / plain, 4),
            "stage_median_s": round(statistics.median(r["stage_s"] for r in rows), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # the size of OpenML's hls4ml_lhc_jets_hlf (830,000 jets), drawn from simulated jets, and 10 epochs
    parser.add_argument("--samples", type=int, default=830_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench/trainer-overhead.json"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fpgaflow-bench-") as tmp:
        path = jets_file(args.samples, Path(tmp))
        spec = bench_spec(path, args.epochs)
        data = load_dataset(spec.dataset)
        scaler = Scaler.fit(data.x_train, data.features)
        print(f"trainer overhead: jet tagger 16-64-32-32-5, {args.samples:,} jets (drawn from {SIMULATED:,} simulated), "
              f"{args.epochs} epochs, batch {spec.train.batch_size}, {args.repeats} pairs, alternating which runs first",
              flush=True)
        warm = bench_spec(path, 1, max_samples=5000)
        plain_fit_seconds(warm, load_dataset(warm.dataset), scaler)  # warm TF up
        for i in range(args.repeats):
            if i % 2 == 0:
                plain = plain_fit_seconds(spec, data, scaler)
                trainer, stage = trainer_fit_seconds(spec, Path(tmp) / f"t{i:03d}")
            else:
                trainer, stage = trainer_fit_seconds(spec, Path(tmp) / f"t{i:03d}")
                plain = plain_fit_seconds(spec, data, scaler)
            rows.append({"plain_s": round(plain, 3), "trainer_s": round(trainer, 3), "stage_s": round(stage, 3)})
            print(f"  run {i + 1}/{args.repeats}: plain fit {plain:.2f} s, trainer fit {trainer:.2f} s "
                  f"({trainer / plain - 1:+.1%}), whole train stage {stage:.2f} s", flush=True)
    summary = overhead(rows)
    verdict = "within" if summary["overhead"] <= BUDGET else "OVER"
    print(f"median overhead of the trainer over a plain fit: {summary['overhead']:+.1%} ({verdict} the {BUDGET:.0%} budget); "
          f"medians: plain {summary['plain_median_s']:.2f} s, trainer {summary['trainer_median_s']:.2f} s "
          f"(ratio {summary['ratio_of_medians']:.3f}); whole stage (data, scaler, model, test set, plot) "
          f"{summary['stage_median_s']:.2f} s")
    write_json(args.out, {"samples": args.samples, "epochs": args.epochs, "runs": rows, **summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
