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

The peer comparison (issue 21): KServe's Python model server (``benchmarks/kserve_peer.py``, in the venv that
``benchmarks/kserve_venv.sh`` builds) serving the same model, then fpgaflow's cpu and fpga servers, one at a
time, all three driven with the same pre-serialized Open Inference v2 ModelInfer requests at 1, 8 and 32
clients, batch 1 and 16: p50/p99 latency, throughput and the server's CPU seconds per request, read from
/proc/<pid>/stat of the server process and every process under it (utime+stime+cutime+cstime summed over the
tree, before and after each run). Their answers are checked against each other first. Then the ratios
against issue 21's goal at batch 1: fpgaflow's server CPU per request at most 1/2 of KServe's on cpu and 1/3
on fpga, and its p50 at one client at most 0.7x KServe's. ``--skip-peer`` leaves it out, ``--peer-only``
runs only it.
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
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fpgaflow_inference.backends import LITERT_TOLERANCE
from fpgaflow_inference.loadgen import Load, RunResult, payloads, predict_payloads, protocol, run_load

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

# The peer comparison: KServe against fpgaflow's cpu and fpga servers, v2 requests.
KSERVE = "kserve"
DEFAULT_KSERVE_VENV = Path(".cache/bench/kserve-venv")
MAKE_KSERVE_VENV = "bash benchmarks/kserve_venv.sh .cache/bench/kserve-venv"
KSERVE_PEER = Path(__file__).resolve().parent / "kserve_peer.py"
PEER_CONCURRENCY = (1, 8, 32)
PEER_BATCH_SIZES = (1, 16)
PEER_REQUEST_SHARE = {1: 1.0, 8: 1 / 8, 32: 1 / 32}  # of --peer-requests, per client: 2000, 250, 62 by default
PEER_WARMUP = 10  # requests per client before the timed ones
PEER_IDLE_SECONDS = 2.0  # the server's idle CPU is read over this long after it starts
PEER_COMPUTE_THREADS = "1"  # OMP_NUM_THREADS for every server: fpgaflow serve's --compute-threads default
CHECK_ROWS = 16  # test-set rows whose answers the servers must agree on
CHECK_ATOL = LITERT_TOLERANCE  # KServe (TensorFlow) against fpgaflow cpu (LiteRT, held this close to TensorFlow at load)
CPU_GOAL = {"cpu": 1 / 2, "fpga": 1 / 3}  # fpgaflow's server CPU per request over KServe's, batch 1, at most
P50_GOAL = 0.7  # fpgaflow's p50 at one client over KServe's, batch 1, at most


@dataclass(frozen=True)
class ServerCase:
    name: str  # "empty", "cpu, batching off", ...
    target: str  # empty, cpu or fpga
    batching: bool
    front: str = "auto"  # fpgaflow serve --front: auto (the server's default), native or python

    def serve_args(self) -> list[str]:
        front = ["--front", self.front]
        if not self.batching:
            return [*front, "--max-batch-size", "1"]
        return [*front, "--max-batch-size", str(BATCH_ON["max_batch_size"]),
                "--max-latency-micros", str(BATCH_ON["max_latency_micros"])]


CASES = (
    ServerCase(EMPTY, EMPTY, False),
    ServerCase("cpu, batching off", "cpu", False),
    ServerCase("cpu, batching on", "cpu", True),
    ServerCase("fpga, batching off", "fpga", False),
    ServerCase("fpga, batching on", "fpga", True),
)


@dataclass(frozen=True)
class PeerServer:
    name: str  # "kserve", "fpgaflow cpu", "fpgaflow fpga native", ...
    kind: str  # kserve or fpgaflow
    target: str  # cpu or fpga (KServe's model is the cpu target's computation)
    front: str = "python"  # fpgaflow's: serve --front

    @property
    def part(self) -> str:
        """The name of its part of the goal: "cpu", "fpga native", ..."""
        return self.name.removeprefix("fpgaflow ")


PEER_SERVERS = (
    PeerServer(KSERVE, KSERVE, "cpu"),
    PeerServer("fpgaflow cpu", "fpgaflow", "cpu"),
    PeerServer("fpgaflow fpga", "fpgaflow", "fpga"),
    PeerServer("fpgaflow cpu native", "fpgaflow", "cpu", "native"),
    PeerServer("fpgaflow fpga native", "fpgaflow", "fpga", "native"),
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


# ------------------------------------------------------------------ pure functions of the peer comparison
def peer_requests_per_client(requests: int, concurrency: int) -> int:
    """Each client's timed requests of the peer comparison at ``concurrency`` clients."""
    share = PEER_REQUEST_SHARE.get(concurrency, 1.0 / concurrency)
    return max(MIN_REQUESTS, round(requests * share))


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(parent pid, CPU clock ticks) from a /proc/<pid>/stat line: utime + stime of the process (all its threads)
    plus cutime + cstime, its children's that it has waited for (fields 14-17; the name may hold spaces and
    parentheses, so fields are counted from its last ')')."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def tree_ticks(table: dict[int, tuple[int, int]], root: int) -> tuple[int, int] | None:
    """(CPU ticks, processes) of ``root`` and every process under it, from ``{pid: (parent pid, ticks)}``;
    None when ``root`` is not in the table. A child that ended and was waited for is in its parent's ticks."""
    if root not in table:
        return None
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    total, count, stack, seen = 0, 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        count += 1
        stack.extend(children.get(pid, ()))
    return total, count


def per_request_seconds(before: float | None, after: float | None, requests: int) -> float | None:
    """CPU seconds per request between two readings; None without both readings or requests."""
    if before is None or after is None or requests <= 0:
        return None
    return (after - before) / requests


def _peer_find(rows: list[dict], server: str, batch_size: int, concurrency: int) -> dict | None:
    return next((r for r in rows if r["server"] == server and r["batch_size"] == batch_size
                 and r["concurrency"] == concurrency), None)


def _ratio(ours, theirs) -> float | None:
    return None if ours is None or not theirs else round(ours / theirs, 4)


def peer_ratios(rows: list[dict], batch_size: int = 1) -> list[dict]:
    """fpgaflow's figures over KServe's at ``batch_size``: server CPU per request per target and client count
    (goal: at most CPU_GOAL[target]), p50 at one client per target (goal: at most P50_GOAL), and, without a
    goal, throughput at each client count. ``met`` is None where a figure is missing."""
    out = []
    for peer in PEER_SERVERS:
        if peer.kind == KSERVE:
            continue
        checks = [("server CPU per request", "server_cpu_ms_per_request", c, CPU_GOAL.get(peer.target))
                  for c in PEER_CONCURRENCY]
        checks.append(("p50 latency", "p50_ms", 1, P50_GOAL))
        checks += [("throughput", "throughput_rps", c, None) for c in PEER_CONCURRENCY]
        for metric, key, concurrency, goal in checks:
            ours, theirs = _peer_find(rows, peer.name, batch_size, concurrency), _peer_find(rows, KSERVE, batch_size, concurrency)
            ratio = _ratio(None if ours is None else ours.get(key), None if theirs is None else theirs.get(key))
            out.append({"metric": metric, "key": key, "server": peer.name, "target": peer.target,
                        "batch_size": batch_size, "concurrency": concurrency,
                        "fpgaflow": None if ours is None else ours.get(key),
                        "kserve": None if theirs is None else theirs.get(key), "ratio": ratio, "goal": goal,
                        "part": peer.part,
                        "met": None if goal is None or ratio is None else ratio <= goal})
    return out


def goal_verdicts(ratios: list[dict]) -> dict[str, bool | None]:
    """Issue 21's goal, one verdict per part and server (cpu, fpga, each behind either front): CPU per request (met
    only where met at every client count), p50 at one client; None where a figure is missing."""
    verdicts: dict[str, bool | None] = {}
    for r in ratios:
        if r["goal"] is None:
            continue
        part = f"{r['part']}: {'CPU/request' if r['key'] == 'server_cpu_ms_per_request' else 'p50 at 1 client'}"
        met = r["met"]
        before = verdicts.get(part, True)
        verdicts[part] = None if met is None or before is None else (before and met)
    return verdicts


def answers_agree(answers: dict[str, object], atol: float = CHECK_ATOL) -> dict:
    """The servers' answers on the same rows: KServe's against fpgaflow cpu's (the same computation: must agree
    within ``atol``), fpga's against cpu's (fixed point against float: the largest difference and the share of
    rows with the same top class, for information)."""
    out: dict = {}
    cpu, kserve, fpga = answers.get("fpgaflow cpu"), answers.get(KSERVE), answers.get("fpgaflow fpga")
    if cpu is not None and kserve is not None:
        a, b = np.asarray(kserve), np.asarray(cpu)
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else None
        out["kserve_vs_cpu"] = {"rows": int(b.shape[0]), "shape_equal": a.shape == b.shape, "max_abs_diff": diff,
                                "atol": atol, "agree": diff is not None and diff <= atol}
    if cpu is not None and fpga is not None:
        a, b = np.asarray(fpga), np.asarray(cpu)
        if a.shape == b.shape:
            out["fpga_vs_cpu"] = {"rows": int(b.shape[0]), "max_abs_diff": float(np.max(np.abs(a - b))),
                                  "same_class": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))}
    return out


def format_answer_check(check: dict) -> str:
    lines = ["answers on the same test-set rows (v2 ModelInfer, batch 16 and 1)"]
    k = check.get("kserve_vs_cpu")
    if k is None:
        lines.append("  kserve vs fpgaflow cpu: not compared (a server's answers are missing)")
    else:
        verdict = "agree" if k["agree"] else "DISAGREE"
        diff = "shapes differ" if k["max_abs_diff"] is None else f"max |diff| {k['max_abs_diff']:.2e}"
        lines.append(f"  kserve vs fpgaflow cpu: {verdict} on {k['rows']} rows ({diff}, tolerance {k['atol']:.0e})")
    f = check.get("fpga_vs_cpu")
    if f is not None:
        lines.append(f"  fpgaflow fpga vs cpu: max |diff| {f['max_abs_diff']:.3g} (fixed point against float), "
                     f"same top class on {f['same_class']:.0%} of {f['rows']} rows")
    return "\n".join(lines)


def format_peer_table(rows: list[dict], servers: tuple[str, ...] = tuple(p.name for p in PEER_SERVERS)) -> str:
    """The peer comparison side by side: per batch size and client count, each server's p50 and p99 (ms),
    throughput (req/s) and server CPU per request (ms)."""
    cell = f"{'p50':>7} {'p99':>7} {'req/s':>7} {'CPU':>6}"
    width = len(cell)
    head1 = f"{'':5} {'':7}" + "".join(f" | {name:^{width}}" for name in servers)
    head2 = f"{'batch':>5} {'clients':>7}" + "".join(f" | {cell}" for _ in servers)
    lines = ["peer comparison: v2 ModelInfer, one server at a time; p50/p99 ms, req/s, server CPU ms per request "
             "(its process tree, /proc)", head1, head2, "-" * len(head2)]
    errors = []
    for batch in sorted({r["batch_size"] for r in rows}):
        for concurrency in sorted({r["concurrency"] for r in rows if r["batch_size"] == batch}):
            line = f"{batch:>5} {concurrency:>7}"
            for name in servers:
                row = _peer_find(rows, name, batch, concurrency)
                if row is None:
                    line += f" | {'—':>{width}}"
                    continue
                line += (f" | {_ms(row.get('p50_ms')):>7} {_ms(row.get('p99_ms')):>7} {row['throughput_rps']:>7.1f} "
                         f"{_ms(row.get('server_cpu_ms_per_request')):>6}")
                if row["errors"]:
                    errors.append(f"{name}, batch {batch}, {concurrency} clients: {row['errors']}")
            lines.append(line)
    lines += [f"errors: {e}" for e in errors]
    return "\n".join(lines)


def format_ratios(ratios: list[dict]) -> str:
    """fpgaflow over KServe against issue 21's goal, and the verdicts."""
    lines = ["fpgaflow / KServe at batch 1 (issue 21's goal: server CPU per request <= 1/2 on cpu, <= 1/3 on fpga; "
             "p50 at 1 client <= 0.7)"]
    for r in ratios:
        if r["ratio"] is None:
            figure = "—"
        elif r["key"] == "throughput_rps":
            figure = f"{r['fpgaflow']:.1f} / {r['kserve']:.1f} req/s = {r['ratio']:.3f}"
        else:
            figure = f"{r['fpgaflow']:.3f} / {r['kserve']:.3f} ms = {r['ratio']:.3f}"
        goal = "" if r["goal"] is None else (
            f"  goal <= {r['goal']:.2f}: " + ("—" if r["met"] is None else "met" if r["met"] else "NOT met"))
        clients = f"{r['concurrency']} client" + ("" if r["concurrency"] == 1 else "s")
        lines.append(f"  {r['server']:<20} {r['metric']:<23} {clients:>10}  {figure}{goal}")
    for part, met in goal_verdicts(ratios).items():
        lines.append(f"  goal, {part:<29} " + ("no figure" if met is None else "MET" if met else "NOT MET")
                     + ("  (at every client count)" if "CPU" in part else ""))
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


def proc_table() -> dict[int, tuple[int, int]]:
    """``{pid: (parent pid, CPU ticks)}`` of every process /proc shows (Linux); empty elsewhere."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            table[int(entry)] = parse_proc_stat(Path(f"/proc/{entry}/stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return table


def tree_cpu(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, processes) of a server: user plus system time of its process, all threads, and of every
    process under it (a worker it forks), with its waited-for children's; None where /proc has no such pid."""
    found = tree_ticks(proc_table(), pid)
    return None if found is None else (found[0] / os.sysconf("SC_CLK_TCK"), found[1])


def cpu_seconds(pid: int) -> float | None:
    """A server's CPU seconds, its process tree's (:func:`tree_cpu`), from /proc (Linux); None elsewhere."""
    found = tree_cpu(pid)
    return None if found is None else found[0]


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


# ------------------------------------------------------------------ the peer comparison
def kserve_python(venv: Path) -> Path | None:
    """The venv's python where benchmarks/kserve_venv.sh completed it, else None."""
    python = venv / "bin" / "python"
    return python if python.is_file() and (venv / ".fpgaflow-kserve-complete").is_file() else None


def v2_ready(address: str, model: str, timeout: float = 1.0) -> bool:
    """Whether the server at ``address`` says the model is ready (v2 ModelReady): KServe has no grpc.health."""
    import grpc

    from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as v2
    from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = v2_grpc.GRPCInferenceServiceStub(channel).ModelReady(v2.ModelReadyRequest(name=model), timeout=timeout)
        return bool(reply.ready)
    except grpc.RpcError:
        return False


def v2_answer(address: str, model: str, input_name: str, output_name: str, rows: np.ndarray) -> np.ndarray:
    """One v2 ModelInfer of ``rows`` (the bytes the load generator sends), its output as an array."""
    import grpc

    from fpgaflow_inference.tensors import v2_to_array
    from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as v2
    from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

    request = v2.ModelInferRequest.FromString(protocol("v2").build(model, input_name, rows))
    with grpc.insecure_channel(address) as channel:
        reply = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    index = next(i for i, o in enumerate(reply.outputs) if o.name == output_name)
    raw = reply.raw_output_contents[index] if len(reply.raw_output_contents) > index else None
    return v2_to_array(reply.outputs[index], raw)


def start_kserve(python: Path, trial: Path, model: str, log: Path) -> tuple[subprocess.Popen, str]:
    """KServe's model server with the trial's model (benchmarks/kserve_peer.py in its venv), once ready."""
    from fpgaflow.processes import free_port

    port, http_port = free_port(), free_port()
    cmd = [str(python), str(KSERVE_PEER), "--trial-dir", str(trial), "--port", str(http_port),
           "--grpc-port", str(port), "--model-name", model]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "OMP_NUM_THREADS": PEER_COMPUTE_THREADS}
    env.pop("PYTHONPATH", None)  # nothing of fpgaflow's venv
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while not v2_ready(address, model):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the KServe peer did not come up (exit {proc.returncode}); {log}:\n{tail}")
        time.sleep(0.3)
    return proc, address


def start_peer_server(peer: PeerServer, kserve: Path | None, trial: Path, model: str, output: str, classes: int,
                      log: Path) -> tuple[subprocess.Popen, str]:
    if peer.kind == KSERVE:
        assert kserve is not None
        return start_kserve(kserve, trial, model, log)
    # fpgaflow serve without dynamic batching (4 worker threads), as the bench-serving spec has it; it sets
    # OMP_NUM_THREADS=1 itself (--compute-threads' default), the peer's setting.
    proc, address, _ = start_server(ServerCase(peer.name, peer.target, False, peer.front), trial, model, output,
                                    classes, log)
    return proc, address


def peer_progress_line(row: dict, per_client: int) -> str:
    return (f"  {row['server']:<14} batch {row['batch_size']:<3d} x{row['concurrency']:<3d} {per_client:>5d} req/client  "
            f"p50 {_ms(row.get('p50_ms')):>7} ms  p99 {_ms(row.get('p99_ms')):>7} ms  {row['throughput_rps']:8.1f} req/s  "
            f"server CPU {_ms(row.get('server_cpu_ms_per_request'))} ms/req ({row['server_processes']} process(es))"
            + (f"  errors {row['errors']}" if row["errors"] else ""))


def measure_peer(peer: PeerServer, kserve: Path | None, trial: Path, model: str, input_name: str, output: str,
                 classes: int, x: np.ndarray, requests: int, out: Path) -> tuple[list[dict], dict]:
    """One server of the peer comparison started, its answers on the check rows taken, its idle CPU read, loaded
    at every batch size and client count, stopped. Returns its rows and ``{"answers", "idle_cpu_ms_per_s"}``."""
    log = out / "logs" / f"peer-{peer.name.replace(' ', '-')}.log"
    proc, address = start_peer_server(peer, kserve, trial, model, output, classes, log)
    rows = []
    try:
        check = x[:CHECK_ROWS]
        answers = np.concatenate([v2_answer(address, model, input_name, output, check),
                                  v2_answer(address, model, input_name, output, check[:1])])
        idle_before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(PEER_IDLE_SECONDS)
        idle_after = cpu_seconds(proc.pid)
        idle = None if idle_before is None or idle_after is None else \
            round((idle_after - idle_before) * 1e3 / (time.monotonic() - t0), 3)
        for batch in PEER_BATCH_SIZES:
            requests_bytes = payloads(protocol("v2"), model, input_name, x, batch)
            for concurrency in PEER_CONCURRENCY:
                per_client = peer_requests_per_client(requests, concurrency)
                before = tree_cpu(proc.pid)
                result = run_load(peer.name, address, requests_bytes, batch,
                                  Load(concurrency, per_client, PEER_WARMUP, protocol="v2"))
                after = tree_cpu(proc.pid)
                row = {"server": peer.name, "kind": peer.kind, **result.summary(), "target": peer.target}
                sent = row["requests"] + PEER_WARMUP * concurrency
                seconds = per_request_seconds(None if before is None else before[0], None if after is None else after[0], sent)
                row["server_cpu_s_per_request"] = None if seconds is None else round(seconds, 7)
                row["server_cpu_ms_per_request"] = None if seconds is None else round(seconds * 1e3, 4)
                row["server_cpu_s_per_sample"] = None if seconds is None else round(seconds / batch, 8)
                row["server_processes"] = None if after is None else after[1]
                rows.append(row)
                print(peer_progress_line(row, per_client), flush=True)
    finally:
        stop_server(proc)
    return rows, {"answers": answers, "idle_cpu_ms_per_s": idle}


PEER_CSV_COLUMNS = ["server", "target", "batch_size", "concurrency", "requests", "ok", "p50_ms", "p90_ms", "p99_ms",
                    "mean_ms", "throughput_rps", "throughput_samples_per_s", "server_cpu_s_per_request",
                    "server_cpu_ms_per_request", "server_cpu_s_per_sample", "server_processes", "wall_seconds", "errors"]


def write_peer_results(out: Path, settings: dict, rows: list[dict], check: dict, idle: dict, ratios: list[dict],
                       verdicts: dict) -> None:
    """peer.json (settings, answer check, idle CPU, every run, ratios, verdicts), peer.csv (the runs) and
    peer-ratios.csv."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.json").write_text(json.dumps(
        {"settings": settings, "answer_check": check, "idle_cpu_ms_per_s": idle, "runs": rows,
         "ratios_batch_1": ratios, "goal": verdicts}, indent=1))
    with (out / "peer.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PEER_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "errors": ";".join(f"{k}={v}" for k, v in row["errors"].items())})
    with (out / "peer-ratios.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["metric", "server", "target", "batch_size", "concurrency", "fpgaflow",
                                                "kserve", "ratio", "goal", "met"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(ratios)


def run_peer_comparison(trial: Path, model: str, input_name: str, output: str, classes: int, x: np.ndarray,
                        kserve: Path, requests: int, out: Path) -> dict:
    """KServe, fpgaflow cpu and fpgaflow fpga one at a time; the table, the answer check and the ratios printed
    and written."""
    settings = {
        "trial": str(trial), "model": model, "cpus": os.cpu_count(), "protocol": "v2 ModelInfer, raw_input_contents",
        "servers": [asdict(p) for p in PEER_SERVERS], "concurrency": list(PEER_CONCURRENCY),
        "batch_sizes": list(PEER_BATCH_SIZES),
        "requests_per_client": {c: peer_requests_per_client(requests, c) for c in PEER_CONCURRENCY},
        "warmup_per_client": PEER_WARMUP, "omp_num_threads": PEER_COMPUTE_THREADS,
        "kserve": "benchmarks/kserve_peer.py: kserve.ModelServer, 1 process, per-request log lines off",
        "fpgaflow": "fpgaflow serve --max-batch-size 1 (no dynamic batching, 4 worker threads), --front python "
                    "(Python's gRPC server on the port) and --front native (the Go front on it, handing each call "
                    "to the Python server over a Unix socket; its CPU is in the server's process tree)",
        "server_cpu": "utime+stime+cutime+cstime summed over the server's process tree from /proc/<pid>/stat, "
                      "after minus before each run, over its requests including the clients' warm-up ones",
        "goal": {"cpu_per_request": CPU_GOAL, "p50_at_1_client": P50_GOAL, "batch_size": 1},
    }
    print(f"\npeer comparison: {model}, KServe's model server against fpgaflow cpu and fpga, v2 ModelInfer, "
          f"batch {' and '.join(map(str, PEER_BATCH_SIZES))}, {', '.join(map(str, PEER_CONCURRENCY))} clients, "
          f"{settings['requests_per_client']} requests per client after {PEER_WARMUP} warm-up; one server at a time; "
          f"OMP_NUM_THREADS={PEER_COMPUTE_THREADS} for every server", flush=True)
    started = time.monotonic()
    rows: list[dict] = []
    answers, idle = {}, {}
    for peer in PEER_SERVERS:
        print(f"{peer.name}:", flush=True)
        peer_rows, facts = measure_peer(peer, kserve, trial, model, input_name, output, classes, x, requests, out)
        rows.extend(peer_rows)
        answers[peer.name], idle[peer.name] = facts["answers"], facts["idle_cpu_ms_per_s"]
    check = answers_agree(answers)
    ratios = peer_ratios(rows)
    verdicts = goal_verdicts(ratios)
    print()
    print(format_answer_check(check), end="\n\n")
    print("idle server CPU (ms per second, over " f"{PEER_IDLE_SECONDS:.0f} s after start): "
          + ", ".join(f"{k} {_ms(v)}" for k, v in idle.items()), end="\n\n")
    print(format_peer_table(rows), end="\n\n")
    print(format_ratios(ratios))
    settings["seconds"] = round(time.monotonic() - started, 1)
    write_peer_results(out, settings, rows, check, idle, ratios, verdicts)
    print(f"\npeer results: {out}/peer.json, peer.csv, peer-ratios.csv ({settings['seconds']:.0f} s)")
    return {"rows": rows, "check": check, "ratios": ratios, "goal": verdicts}


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
    parser.add_argument("--peer-requests", type=int, default=2000,
                        help="peer comparison: timed requests of the single client (default 2000); 8 and 32 clients "
                             "send 1/8 and 1/32 of it each")
    parser.add_argument("--kserve-venv", type=Path, default=DEFAULT_KSERVE_VENV,
                        help=f"the KServe peer's venv (default {DEFAULT_KSERVE_VENV}; `{MAKE_KSERVE_VENV}` builds it)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--skip-peer", action="store_true", help="leave the KServe peer comparison out")
    which.add_argument("--peer-only", action="store_true", help="only the KServe peer comparison")
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
    kserve = None
    if not args.skip_peer:
        kserve = kserve_python(args.kserve_venv)
        if kserve is None:
            print(f"serverbench: no complete KServe venv at {args.kserve_venv}; build it with `{MAKE_KSERVE_VENV}` "
                  "(`make bench` does), or pass --skip-peer", file=sys.stderr)
            return 2
    from fpgaflow.trial import INPUT_NAME, OUTPUT_NAME, TrialDir, read_json

    trial_dir = TrialDir(trial)
    model = trial_dir.experiment
    classes = len(read_json(trial / "train" / "dataset.json")["classes"])
    x = np.load(trial / "train" / "testset.npz")["x"]
    if not args.peer_only:
        benchmark_servers(args, trial, model, classes, x)
    if kserve is not None:
        run_peer_comparison(trial.resolve(), model, INPUT_NAME, OUTPUT_NAME, classes, x, kserve, args.peer_requests, args.out)
    return 0


def benchmark_servers(args: argparse.Namespace, trial: Path, model: str, classes: int, x: np.ndarray) -> None:
    """fpgaflow's servers against the empty handler, batching off and on (TF Serving Predict, batch 1)."""
    from fpgaflow.trial import INPUT_NAME, OUTPUT_NAME

    payloads = predict_payloads(model, INPUT_NAME, x, 1)
    settings = {
        "trial": str(trial), "model": model, "cpus": os.cpu_count(), "concurrency": list(CONCURRENCY),
        "requests_per_client": {c: requests_per_client(args.requests, c) for c in CONCURRENCY},
        "warmup_per_client": WARMUP, "batch_size": 1, "workers": WORKERS,
        "batching_on": BATCH_ON, "batching_off": {"max_batch_size": 1}, "front": "fpgaflow serve's default (auto: the "
        "native front where fpgaflow-front is installed); the server CPU counts its process tree",
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


if __name__ == "__main__":
    raise SystemExit(main())
