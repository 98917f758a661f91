"""The `bench` stage: every ready endpoint of the trial, at every concurrency of the spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpgaflow.errors import MissingArtifact
from fpgaflow.inference.loadgen import predict_payloads, run_load, served_accuracy, write_csv
from fpgaflow.plots import plot_benchmark
from fpgaflow.trainer.model import INPUT_NAME, OUTPUT_NAME
from fpgaflow.trial import EVALUATION_SAMPLES, TrialDir, read_json, write_json


def run(trial: TrialDir, out: Path) -> dict:
    spec = trial.spec()
    endpoints = read_json(trial.stage_dir("serve") / "endpoints.json")
    testset = np.load(trial.stage_dir("train") / "testset.npz")
    x, y = testset["x"], testset["y"]
    bench = spec.benchmark
    payloads = predict_payloads(trial.experiment, INPUT_NAME, x, bench.batch_size)

    targets: dict[str, dict] = {}
    rows: list[dict] = []
    record: dict[str, np.ndarray] = {}
    for target in spec.serve.targets:
        endpoint = endpoints.get(target)
        if endpoint is None:
            raise MissingArtifact(f"serve/endpoints.json has no entry for target {target!r}")
        if endpoint["status"] != "ready":
            targets[target] = {"status": endpoint["status"], "reason": endpoint.get("reason", "")}
            print(f"{target}: {endpoint['status']} ({endpoint.get('reason', '')}), not benchmarked", flush=True)
            continue
        address = endpoint["address"]
        accuracy = served_accuracy(address, trial.experiment, INPUT_NAME, OUTPUT_NAME, x[:EVALUATION_SAMPLES], y[:EVALUATION_SAMPLES])
        target_rows = []
        for concurrency in bench.concurrency:
            result = run_load(target, address, payloads, bench.batch_size, concurrency, bench.requests_per_client, bench.warmup)
            row = result.summary()
            record[f"{target}_c{concurrency}"] = result.latencies_ms
            target_rows.append(row)
            print(
                f"{target} x{concurrency:<3d} p50 {row.get('p50_ms', float('nan')):8.3f} ms  "
                f"p99 {row.get('p99_ms', float('nan')):8.3f} ms  {row['throughput_rps']:9.1f} req/s  errors {row['errors'] or 0}",
                flush=True,
            )
        targets[target] = {
            "status": "ready",
            "address": address,
            "backend": endpoint.get("backend", ""),
            "accuracy_served": accuracy,
            "accuracy_samples": int(min(len(x), EVALUATION_SAMPLES)),
        }
        rows.extend(target_rows)

    write_json(out / "results.json", {"benchmark": spec.benchmark.model_dump(by_alias=True), "targets": targets, "runs": rows})
    write_csv(rows, out / "results.csv")
    np.savez_compressed(out / "latencies.npz", **record)
    if rows:
        plot_benchmark(rows, out, title=f"{trial.experiment} / {trial.root.name}, batch {bench.batch_size}")
    return {"targets": targets, "runs": rows}
