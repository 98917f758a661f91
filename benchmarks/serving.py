"""The serving benchmark of ``make bench``: ``python -m benchmarks.serving``.

What fpgaflow's server costs per request, and what dynamic batching buys. The reference is an empty
grpc.aio server (this module with ``--empty-server PORT``) that deserializes each PredictRequest with
the stock protos and answers a fixed, pre-serialized PredictResponse of the real one's shape. Then the
trial's cpu and fpga ``serve`` processes, batching off and on, one at a time so that they do not
compete for the cores. Each takes loadgen's clients (processes sending serialized requests one after
another) at 1, 8 and 50 concurrent clients; every figure is from this one run.

Per-request overhead, at one client: the server's median latency minus the empty handler's, and that
minus the back end's compute time (the mean of fpgaflow_compute_duration_seconds over the same run,
read from the server's /metrics before and after it). Beside each run: the mean batch size, and the
server process's CPU time per request (from /proc), which shows where a saturated server spends it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fpgaflow_inference.loadgen import Load, RunResult, predict_payloads, run_load

DEFAULT_TRIAL = Path(".cache/bench/experiments/bench-serving/t00")
DEFAULT_OUT = Path(".cache/bench/serving")
MAKE_TRIAL = "fpgaflow run examples/bench-serving.yaml --home .cache/bench --replace"
CONCURRENCY = (1, 8, 50)
REQUEST_SHARE = {1: 1.0, 8: 0.2, 50: 0.1}  # of --requests, per client: 2000, 400, 200 by default
MIN_REQUESTS = 10
WARMUP = 20  # requests per client before the timed ones
BATCH_ON = {"max_batch_size": 64, "max_latency_micros": 500}
WORKERS = "the server's default: 1 with batching, 4 without"
START_TIMEOUT = 180.0
HISTOGRAMS = ("fpgaflow_compute_duration_seconds", "fpgaflow_batch_size", "fpgaflow_queue_duration_seconds")
EMPTY = "empty"


@dataclass(frozen=True)
class ServerCase:
    name: str  # "empty", "cpu, batching off", ...
    target: str  # empty, cpu or fpga
    batching: bool

    def serve_args(self) -> list[str]:
        if not self.batching:
            return ["--max-batch-size", "1"]
        return ["--max-batch-size", str(BATCH_ON["max_batch_size"]),
                "--max-latency-micros", str(BATCH_ON["max_latency_micros"])]


CASES = (
    ServerCase(EMPTY, EMPTY, False),
    ServerCase("cpu, batching off", "cpu", False),
    ServerCase("cpu, batching on", "cpu", True),
    ServerCase("fpga, batching off", "fpga", False),
    ServerCase("fpga, batching on", "fpga", True),
)


# ------------------------------------------------------------------ pure functions: plan, arithmetic, text
def requests_per_client(requests: int, concurrency: int) -> int:
    """Each client's timed requests at ``concurrency`` clients, for ``requests`` at one client."""
    share = REQUEST_SHARE.get(concurrency, 1.0 / concurrency)
    return max(MIN_REQUESTS, round(requests * share))


def histogram_totals(text: str, names: tuple[str, ...] = HISTOGRAMS) -> dict[str, tuple[float, float]]:
    """(sum, count) of each named histogram in a Prometheus text exposition, over all its label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = {name: (0.0, 0.0) for name in names}
    for family in text_string_to_metric_families(text):
        if family.name not in totals:
            continue
        total, count = totals[family.name]
        for sample in family.samples:
            if sample.name == f"{family.name}_sum":
                total += sample.value
            elif sample.name == f"{family.name}_count":
                count += sample.value
        totals[family.name] = (total, count)
    return totals


def mean_between(before: dict, after: dict, name: str) -> float | None:
    """The mean of one histogram's observations made between two readings; None when there were none."""
    total = after[name][0] - before[name][0]
    count = after[name][1] - before[name][1]
    return total / count if count > 0 else None


def server_row(case: ServerCase, summary: dict, before: dict | None, after: dict | None) -> dict:
    """loadgen's summary of one run, labelled with its server, with the server's own means over the run."""
    row = {"server": case.name, **summary, "target": case.name}
    if before is not None and after is not None:
        compute = mean_between(before, after, "fpgaflow_compute_duration_seconds")
        queue = mean_between(before, after, "fpgaflow_queue_duration_seconds")
        batch = mean_between(before, after, "fpgaflow_batch_size")
        row["compute_ms_mean"] = None if compute is None else round(compute * 1e3, 4)
        row["queue_ms_mean"] = None if queue is None else round(queue * 1e3, 4)
        row["batch_mean"] = None if batch is None else round(batch, 2)
    return row


def cpu_per_request(before: float | None, after: float | None, requests: int) -> float | None:
    """The server's CPU milliseconds per request between two readings (warm-up requests included)."""
    if before is None or after is None or requests <= 0:
        return None
    return round((after - before) * 1e3 / requests, 4)


def _find(rows: list[dict], server: str, concurrency: int) -> dict | None:
    return next((r for r in rows if r["server"] == server and r["concurrency"] == concurrency), None)


def overheads(rows: list[dict], concurrency: int = 1) -> dict[str, dict]:
    """Per fpgaflow server at ``concurrency`` clients: its median latency minus the empty handler's
    (the server's overhead plus its compute), and that minus the mean compute time per back-end call."""
    empty = _find(rows, EMPTY, concurrency)
    if empty is None or "p50_ms" not in empty:
        return {}
    out = {}
    for row in rows:
        if row["server"] == EMPTY or row["concurrency"] != concurrency or "p50_ms" not in row:
            continue
        over = row["p50_ms"] - empty["p50_ms"]
        compute = row.get("compute_ms_mean")
        out[row["server"]] = {
            "p50_ms": row["p50_ms"], "empty_p50_ms": empty["p50_ms"], "overhead_ms": round(over, 4),
            "compute_ms_mean": compute,
            "overhead_without_compute_ms": None if compute is None else round(over - compute, 4),
        }
    return out


def batching_gains(rows: list[dict], concurrency: int = 50) -> dict[str, dict]:
    """Per target: throughput at ``concurrency`` clients with batching on over batching off."""
    out = {}
    for target in sorted({r["server"].split(",")[0] for r in rows if r["server"] != EMPTY}):
        off, on = _find(rows, f"{target}, batching off", concurrency), _find(rows, f"{target}, batching on", concurrency)
        if off is None or on is None or not off["throughput_rps"]:
            continue
        out[target] = {"off_rps": off["throughput_rps"], "on_rps": on["throughput_rps"],
                       "gain": round(on["throughput_rps"] / off["throughput_rps"], 3),
                       "on_batch_mean": on.get("batch_mean")}
    return out


def _ms(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_table(server: str, rows: list[dict]) -> str:
    """One server's runs as an aligned text table: clients, p50, p99, throughput, mean batch, mean compute
    time per back-end call, the server's CPU time per request, errors."""
    header = (f"{'clients':>7}  {'p50 ms':>8}  {'p99 ms':>8}  {'req/s':>9}  {'batch':>6}  {'compute ms':>10}  "
              f"{'server CPU ms/req':>17}  errors")
    lines = [server, header, "-" * len(header)]
    for row in sorted((r for r in rows if r["server"] == server), key=lambda r: r["concurrency"]):
        batch = row.get("batch_mean")
        errors = ", ".join(f"{k} {v}" for k, v in row["errors"].items()) or "0"
        lines.append(f"{row['concurrency']:>7}  {_ms(row.get('p50_ms')):>8}  {_ms(row.get('p99_ms')):>8}  "
                     f"{row['throughput_rps']:>9.1f}  {'—' if batch is None else f'{batch:.2f}':>6}  "
                     f"{_ms(row.get('compute_ms_mean')):>10}  {_ms(row.get('server_cpu_ms_per_request')):>17}  {errors}")
    return "\n".join(lines)


def format_overheads(overhead: dict[str, dict]) -> str:
    lines = ["per-request overhead at 1 client (medians; compute: mean per back-end call from /metrics)"]
    for server, o in overhead.items():
        rest = "" if o["overhead_without_compute_ms"] is None else (
            f", minus compute {_ms(o['compute_ms_mean'])} ms = {_ms(o['overhead_without_compute_ms'])} ms")
        lines.append(f"  {server:<20} {_ms(o['p50_ms'])} - empty {_ms(o['empty_p50_ms'])} = "
                     f"{_ms(o['overhead_ms'])} ms{rest}")
    return "\n".join(lines)


def format_gains(gains: dict[str, dict], concurrency: int = 50) -> str:
    lines = [f"dynamic batching at {concurrency} clients (throughput on / off)"]
    for target, g in gains.items():
        batch = "" if g["on_batch_mean"] is None else f"; mean batch with it on {g['on_batch_mean']:.2f}"
        verdict = "raises" if g["gain"] > 1 else "does NOT raise"
        lines.append(f"  {target:<5} {g['on_rps']:.1f} / {g['off_rps']:.1f} req/s = {g['gain']:.3f}x: "
                     f"batching {verdict} throughput{batch}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the empty reference server
def empty_response(model: str, output: str, classes: int) -> bytes:
    """A PredictResponse like the real server's for one sample, serialized once."""
    from tensorflow_serving.apis import predict_pb2

    from fpgaflow_inference.tensors import from_array

    response = predict_pb2.PredictResponse()
    response.model_spec.name = model
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    response.outputs[output].CopyFrom(from_array(np.full((1, classes), 1.0 / classes, dtype=np.float32)))
    return response.SerializeToString()


async def _serve_empty(port: int, answer: bytes) -> None:
    import asyncio

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import predict_pb2

    async def predict(request, context):  # the request is deserialized, as the real server does; nothing else
        return answer

    handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(
            predict, request_deserializer=predict_pb2.PredictRequest.FromString, response_serializer=lambda b: b)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


# ------------------------------------------------------------------ one server at a time
def start_server(case: ServerCase, trial: Path, model: str, output: str, classes: int, log: Path) -> tuple[subprocess.Popen, str, str | None]:
    """The process, its gRPC address and its metrics URL (None for the empty server), once healthy."""
    from fpgaflow.processes import free_port
    from fpgaflow_inference.loadgen import health_ok

    port = free_port()
    if case.target == EMPTY:
        cmd = [sys.executable, "-m", "benchmarks.serving", "--empty-server", str(port),
               "--model", model, "--output", output, "--classes", str(classes)]
        metrics = None
    else:
        metrics_port = free_port()
        cmd = [sys.executable, "-m", "fpgaflow", "serve", "--trial-dir", str(trial), "--target", case.target,
               "--port", str(port), "--metrics-port", str(metrics_port), *case.serve_args()]
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while not health_ok(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the {case.name} server did not come up (exit {proc.returncode}); {log}:\n{tail}")
        time.sleep(0.3)
    return proc, address, metrics


def stop_server(proc: subprocess.Popen) -> None:
    from fpgaflow.processes import Processes

    Processes.stop(proc, grace=30.0)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process, all its threads, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str | None) -> dict | None:
    if url is None:
        return None
    with urllib.request.urlopen(url, timeout=10) as reply:
        return histogram_totals(reply.read().decode())


def progress_line(row: dict, per_client: int) -> str:
    line = (f"  {row['server']:<20} x{row['concurrency']:<3d} {per_client:>5d} req/client  p50 {_ms(row.get('p50_ms')):>7} ms  "
            f"p99 {_ms(row.get('p99_ms')):>7} ms  {row['throughput_rps']:8.1f} req/s")
    if row.get("batch_mean") is not None:
        line += f"  mean batch {row['batch_mean']:.2f}"
    if row.get("server_cpu_ms_per_request") is not None:
        line += f"  server CPU {row['server_cpu_ms_per_request']:.3f} ms/req"
    return line + (f"  errors {row['errors']}" if row["errors"] else "")


def measure(case: ServerCase, trial: Path, model: str, output: str, classes: int, payloads: list[bytes],
            requests: int, out: Path) -> list[dict]:
    """One server started, loaded at every concurrency, stopped."""
    log = out / "logs" / f"{case.name.replace(', ', '-').replace(' ', '-')}.log"
    proc, address, metrics = start_server(case, trial, model, output, classes, log)
    rows = []
    try:
        for concurrency in CONCURRENCY:
            per_client = requests_per_client(requests, concurrency)
            before, cpu_before = scrape(metrics), cpu_seconds(proc.pid)
            result: RunResult = run_load(case.name, address, payloads, 1, Load(concurrency, per_client, WARMUP))
            row = server_row(case, result.summary(), before, scrape(metrics))
            row["server_cpu_ms_per_request"] = cpu_per_request(cpu_before, cpu_seconds(proc.pid),
                                                               row["requests"] + WARMUP * concurrency)
            rows.append(row)
            print(progress_line(row, per_client), flush=True)
    finally:
        stop_server(proc)
    return rows


# ------------------------------------------------------------------ results
CSV_COLUMNS = ["server", "concurrency", "requests", "ok", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_rps",
               "batch_mean", "compute_ms_mean", "queue_ms_mean", "server_cpu_ms_per_request", "wall_seconds", "errors"]


def write_results(out: Path, settings: dict, rows: list[dict], overhead: dict, gains: dict) -> None:
    from fpgaflow.plots import plot_benchmark

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"settings": settings, "runs": rows, "overhead_at_1_client": overhead, "batching_gain_at_50_clients": gains},
        indent=1))
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "errors": ";".join(f"{k}={v}" for k, v in row["errors"].items())})
    plotted = [r for r in rows if "p50_ms" in r]
    if plotted:  # latency.png and throughput.png, one line per server, in the house style
        plot_benchmark(plotted, out, title=f"{settings['model']}: servers against clients, batch 1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-dir", type=Path, default=DEFAULT_TRIAL, help=f"a trained, converted trial (default {DEFAULT_TRIAL})")
    parser.add_argument("--requests", type=int, default=2000,
                        help="timed requests of the single client (default 2000); 8 and 50 clients send 1/5 and 1/10 of it each")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--empty-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="bench-serving", help=argparse.SUPPRESS)
    parser.add_argument("--output", default="probabilities", help=argparse.SUPPRESS)
    parser.add_argument("--classes", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.empty_server is not None:
        import asyncio

        asyncio.run(_serve_empty(args.empty_server, empty_response(args.model, args.output, args.classes)))
        return 0

    trial = args.trial_dir
    if not (trial / "train" / "testset.npz").is_file() or not (trial / "convert").is_dir():
        print(f"serverbench: {trial} is not a trained and converted trial; make it with `{MAKE_TRIAL}` "
              "(`make bench` does)", file=sys.stderr)
        return 2
    from fpgaflow.trial import INPUT_NAME, OUTPUT_NAME, TrialDir, read_json

    trial_dir = TrialDir(trial)
    model = trial_dir.experiment
    classes = len(read_json(trial / "train" / "dataset.json")["classes"])
    x = np.load(trial / "train" / "testset.npz")["x"]
    payloads = predict_payloads(model, INPUT_NAME, x, 1)
    settings = {
        "trial": str(trial), "model": model, "cpus": os.cpu_count(), "concurrency": list(CONCURRENCY),
        "requests_per_client": {c: requests_per_client(args.requests, c) for c in CONCURRENCY},
        "warmup_per_client": WARMUP, "batch_size": 1, "workers": WORKERS,
        "batching_on": BATCH_ON, "batching_off": {"max_batch_size": 1},
        "compute_time": "mean of fpgaflow_compute_duration_seconds (sum/count) over the run, from the server's /metrics; "
                        "server means include the clients' warm-up requests",
        "cases": [asdict(c) for c in CASES],
    }
    print(f"serving benchmark: {model} ({trial}), batch 1, {', '.join(map(str, CONCURRENCY))} clients, "
          f"{settings['requests_per_client']} requests per client after {WARMUP} warm-up; one server at a time; "
          f"batching on = max batch {BATCH_ON['max_batch_size']}, max delay {BATCH_ON['max_latency_micros']} µs, "
          f"worker threads: {WORKERS}; empty = a grpc.aio Predict handler answering a fixed response; "
          f"{os.cpu_count()} CPUs shared by server and clients", flush=True)
    started = time.monotonic()
    rows: list[dict] = []
    for case in CASES:
        print(f"{case.name}:", flush=True)
        rows.extend(measure(case, trial, model, OUTPUT_NAME, classes, payloads, args.requests, args.out))

    overhead, gains = overheads(rows), batching_gains(rows)
    print()
    for case in CASES:
        print(format_table(case.name, rows), end="\n\n")
    print(format_overheads(overhead), end="\n\n")
    print(format_gains(gains))
    settings["seconds"] = round(time.monotonic() - started, 1)
    write_results(args.out, settings, rows, overhead, gains)
    print(f"\nresults: {args.out}/results.json, results.csv, throughput.png, latency.png ({settings['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
