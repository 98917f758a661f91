"""The `bench` stage: every ready endpoint of the trial, from every network of the spec (on-prem, or at a
modelled distance), at every batch size and number of clients; and the same load generator on its own
against any endpoint (:func:`run_standalone`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpgaflow.errors import MissingArtifact
from fpgaflow.plots import plot_benchmark, write_csv
from fpgaflow.trial import (
    EVALUATION_SAMPLES,
    INPUT_NAME,
    OUTPUT_NAME,
    TrialDir,
    model_versions,
    read_json,
    write_json,
)
from fpgaflow_inference.loadgen import csv_table, discover_input, scan, served_accuracy
from fpgaflow_inference.netem import MODELLED_BY, Network


def network_settings(networks: list[Network]) -> list[dict]:
    """The networks as results.json's settings give them: name, rttMs, bandwidthMbps and how the distance was made."""
    return [{"name": n.name, "rttMs": n.rtt_ms, "bandwidthMbps": n.bandwidth_mbps,
             "path": "direct" if n.direct else MODELLED_BY} for n in networks]


def run(trial: TrialDir, out: Path) -> dict:
    spec = trial.spec()
    endpoints = read_json(trial.stage_dir("serve") / "endpoints.json")
    testset = np.load(trial.stage_dir("train") / "testset.npz")
    x, y = testset["x"], testset["y"]
    bench = spec.benchmark

    served = model_versions(trial)
    networks = [Network(n.name, n.rtt_ms, n.bandwidth_mbps) for n in bench.networks]
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
        x_eval, y_eval = x[:EVALUATION_SAMPLES], y[:EVALUATION_SAMPLES]
        versions = {str(v.number): served_accuracy(address, trial.experiment, INPUT_NAME, OUTPUT_NAME, x_eval, y_eval,
                                                   version=v.number)
                    for v in served} if len(served) > 1 else None
        # a request without a version gets the latest: its accuracy is the latest version's
        accuracy = (versions[str(served[-1].number)] if versions else
                    served_accuracy(address, trial.experiment, INPUT_NAME, OUTPUT_NAME, x_eval, y_eval))
        targets[target] = {
            "status": "ready",
            "address": address,
            "backend": endpoint.get("backend", ""),
            "accuracy_served": accuracy,
            "accuracy_samples": int(min(len(x), EVALUATION_SAMPLES)),
        }
        if versions is not None:  # the Brainwave recipe: before (1) and after (2) the head's retraining
            targets[target]["accuracy_served_versions"] = versions
    for network in networks:
        if len(networks) > 1:
            print(f"network {network.name}: {network.describe()}", flush=True)
        for target, info in targets.items():
            if info["status"] != "ready":
                continue
            target_rows, target_record = scan(target, info["address"], trial.experiment, INPUT_NAME, x, bench.batch_sizes,
                                              bench.concurrency, bench.requests_per_client, bench.warmup, bench.rate,
                                              bench.protocol, say=lambda line: print(line, flush=True), network=network,
                                              key_network=len(networks) > 1)
            rows.extend(target_rows)
            record.update(target_record)

    settings = spec.benchmark.model_dump(by_alias=True) | {"networks": network_settings(networks)}
    write_results(out, settings, targets, rows, record, title=f"{trial.experiment} / {trial.root.name}")
    return {"targets": targets, "runs": rows}


def write_results(out: Path, settings: dict, targets: dict, rows: list[dict], record: dict[str, np.ndarray], title: str) -> None:
    """results.json, results.csv, latencies.npz (every request, in ms) and the latency and throughput plots."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"benchmark": settings, "targets": targets, "runs": rows})
    write_csv(out / "results.csv", *csv_table(rows))
    np.savez_compressed(out / "latencies.npz", **record)
    if rows:
        sizes = sorted({r["batch_size"] for r in rows})
        plot_benchmark(rows, out, title=f"{title}, batch {', '.join(map(str, sizes))}")


def run_standalone(address: str, model: str, out: Path, *, proto: str = "tfserving", input_name: str | None = None,
                   features: int | None = None, data: Path | None = None, batch_sizes: list[int], concurrency: list[int],
                   requests: int, warmup: int, rate: float | None, target: str = "endpoint",
                   network: Network | None = None) -> list[dict]:
    """The load generator against any TF Serving or v2 endpoint: inputs from ``data`` (an .npz with ``x``
    or a .npy), else random normal samples of the shape the endpoint's metadata gives (``features`` values
    each, where given); the clients at ``network``'s modelled distance, where given."""
    shape = (features,) if features is not None else None
    if input_name is None or (shape is None and data is None):
        found_name, found_shape = discover_input(address, model, proto)
        input_name, shape = input_name or found_name, shape or found_shape
    if data is not None:
        loaded = np.load(data)
        x = np.asarray(loaded["x"] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded, dtype=np.float32)
    else:
        x = np.random.default_rng(0).standard_normal((4096, *shape)).astype(np.float32)
    print(f"bench: {address} model {model!r} input {input_name!r} (samples of shape {list(x.shape[1:])}), protocol {proto}, "
          f"{'open loop at ' + format(rate, 'g') + ' req/s' if rate else 'closed loop'}"
          f"{', clients at ' + network.describe() + ' distance' if network and not network.direct else ''}", flush=True)
    rows, record = scan(target, address, model, input_name, x, batch_sizes, concurrency, requests, warmup, rate, proto,
                        say=lambda line: print(line, flush=True), network=network)
    settings = {"address": address, "model": model, "protocol": proto, "batchSizes": batch_sizes, "concurrency": concurrency,
                "requestsPerClient": requests, "warmup": warmup, "rate": rate}
    if network is not None:
        settings["networks"] = network_settings([network])
    write_results(out, settings, {target: {"status": "ready", "address": address}}, rows, record, title=f"{model} at {address}")
    print(f"results: {out}/results.json, results.csv, latencies.npz, latency.png, throughput.png", flush=True)
    return rows
