"""The load generator: ``fpgaflow bench`` on a trial's servers (the bench stage), or on its own against
any TF Serving or Open Inference v2 endpoint (``fpgaflow bench --address HOST:PORT --model NAME``).

N client processes each send M requests, after a warm-up that is not timed:

- **closed loop** (the SONIC setup): one after another, each as soon as the previous answer came;
- **open loop** (``rate``): at a fixed rate, all clients together, each request sent at its scheduled
  time whether or not earlier ones were answered; its latency counts from that scheduled time, so a
  server that falls behind shows it (no coordinated omission).

Requests are serialized once in the parent with the stock protos (TF Serving ``PredictRequest`` or v2
``ModelInferRequest``); the clients send those bytes and import neither TensorFlow nor the model, so
what is timed is the server. Every request's latency is kept; errors are counted by gRPC status code.

The clients may sit at a modelled network distance (:class:`~fpgaflow_inference.netem.Network`, SONIC's
remote against on-prem): they then call a relaying proxy on this machine that delays and paces the bytes on
their way to the server and back (fpgaflow_inference.netem), started for the run and stopped after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from fpgaflow_inference.netem import Network, Relay

N_PAYLOADS = 32
START_TIMEOUT = 120.0
CALL_TIMEOUT = 60.0
PROGRESS_EVERY = 2.0  # seconds between progress reports of a run


@dataclass(frozen=True)
class Protocol:
    """An inference API as the load generator speaks it: the method's path and its request bytes."""

    name: str
    method: str
    build: Callable[[str, str, np.ndarray], bytes]  # (model, input name, rows) -> serialized request


def _tfserving_request(model: str, input_name: str, rows: np.ndarray) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from fpgaflow_inference.tensors import from_array

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[input_name].CopyFrom(from_array(rows))
    return request.SerializeToString()


def _v2_request(model: str, input_name: str, rows: np.ndarray) -> bytes:
    from fpgaflow_inference.tensors import array_to_v2_raw
    from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as v2

    datatype, shape, raw = array_to_v2_raw(rows)
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request.SerializeToString()


PROTOCOLS = {
    "tfserving": Protocol("tfserving", "/tensorflow.serving.PredictionService/Predict", _tfserving_request),
    "v2": Protocol("v2", "/inference.GRPCInferenceService/ModelInfer", _v2_request),
}


def protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})") from None


def payloads(proto: Protocol, model: str, input_name: str, x: np.ndarray, batch_size: int, n: int = N_PAYLOADS) -> list[bytes]:
    """``n`` serialized requests of ``batch_size`` consecutive samples each, cycling through ``x``."""
    return [proto.build(model, input_name, np.take(x, np.arange(i * batch_size, (i + 1) * batch_size), axis=0, mode="wrap"))
            for i in range(n)]


def predict_payloads(model_name: str, input_name: str, x: np.ndarray, batch_size: int, n: int = N_PAYLOADS) -> list[bytes]:
    """TF Serving PredictRequests (the serving benchmark's)."""
    return payloads(PROTOCOLS["tfserving"], model_name, input_name, x, batch_size, n)


@dataclass(frozen=True)
class Load:
    """How one run loads the server."""

    concurrency: int
    requests: int  # per client, timed
    warmup: int = 0  # per client, before timing, not counted
    rate: float | None = None  # requests per second of all clients together (open loop); None: closed loop
    protocol: str = "tfserving"

    @property
    def mode(self) -> str:
        return "closed" if self.rate is None else "open"

    @property
    def total(self) -> int:
        return self.concurrency * self.requests


@dataclass(frozen=True)
class RunResult:
    target: str
    concurrency: int
    batch_size: int
    latencies_ms: np.ndarray  # of the successful requests
    errors: dict[str, int]
    wall_seconds: float
    load: Load | None = field(default=None, compare=False)
    network: Network | None = field(default=None, compare=False)  # where the clients sat (None: not said, direct)

    def summary(self) -> dict:
        lat = self.latencies_ms
        ok = len(lat)
        row = {
            "target": self.target,
            **({"network": self.network.name, "rtt_ms": self.network.rtt_ms, "bandwidth_mbps": self.network.bandwidth_mbps}
               if self.network is not None else {}),
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "requests": ok + sum(self.errors.values()),
            "ok": ok,
            "errors": dict(self.errors),
            "wall_seconds": round(self.wall_seconds, 4),
            "throughput_rps": round(ok / self.wall_seconds, 2) if self.wall_seconds > 0 else 0.0,
        }
        if self.load is not None:
            row.update(protocol=self.load.protocol, mode=self.load.mode)
            if self.load.rate is not None:
                row["offered_rps"] = self.load.rate
        row["throughput_samples_per_s"] = round(row["throughput_rps"] * self.batch_size, 2)
        if ok:
            p50, p90, p99 = np.percentile(lat, [50, 90, 99])
            row.update(
                p50_ms=round(float(p50), 4), p90_ms=round(float(p90), 4), p99_ms=round(float(p99), 4),
                mean_ms=round(float(lat.mean()), 4), std_ms=round(float(lat.std()), 4),
                min_ms=round(float(lat.min()), 4), max_ms=round(float(lat.max()), 4),
            )
        return row


class _Record:
    """One client's latencies and error codes; open-loop answers arrive on gRPC's threads."""

    def __init__(self, n: int, progress):
        self.latencies = np.zeros(n, dtype=np.int64)
        self.ok = 0
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._progress = progress
        self._unreported = 0

    def add(self, nanoseconds: int | None, code: str | None = None) -> None:
        with self._lock:
            if code is None:
                self.latencies[self.ok] = nanoseconds
                self.ok += 1
            else:
                self.errors[code] = self.errors.get(code, 0) + 1
            self._unreported += 1
            if self._unreported >= 16:
                self.flush()

    def close(self) -> None:
        """Report what is left to the progress counter (at the end of a client's run)."""
        with self._lock:
            self.flush()

    def flush(self) -> None:
        """Add the unreported answers to the shared progress counter (the caller holds the lock)."""
        if self._unreported:
            with self._progress.get_lock():
                self._progress.value += self._unreported
            self._unreported = 0


def _code(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    return code.name if code else "UNKNOWN"


def _client(address: str, method: str, payloads: list[bytes], load: Load, barrier, results, progress) -> None:
    """One client process: warm up, wait for the others, then send ``load.requests`` requests."""
    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(method)  # bytes in, bytes out: no (de)serialization on the client
    record = _Record(load.requests, progress)
    try:
        for i in range(load.warmup):
            try:
                call(payloads[i % len(payloads)], timeout=CALL_TIMEOUT)
            except grpc.RpcError:
                pass
        barrier.wait(timeout=START_TIMEOUT)
        start = time.time_ns()
        if load.rate is None:
            _closed_loop(call, payloads, load.requests, record)
        else:
            _open_loop(call, payloads, load.requests, load.rate / load.concurrency, record)
        end = time.time_ns()
    finally:
        channel.close()
    record.close()
    results.put((record.latencies[: record.ok], record.errors, start, end))


def _closed_loop(call, payloads: list[bytes], requests: int, record: _Record) -> None:
    for i in range(requests):
        t0 = time.perf_counter_ns()
        try:
            call(payloads[i % len(payloads)], timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            record.add(None, _code(exc))
            continue
        record.add(time.perf_counter_ns() - t0)


def _open_loop(call, payloads: list[bytes], requests: int, rate: float, record: _Record) -> None:
    interval = int(1e9 / rate)
    start = time.perf_counter_ns() + int(np.random.default_rng().integers(0, interval))  # clients out of phase
    futures = []

    def done(future, scheduled):
        try:
            future.result()
        except grpc.RpcError as exc:
            record.add(None, _code(exc))
            return
        record.add(time.perf_counter_ns() - scheduled)

    for i in range(requests):
        scheduled = start + i * interval
        wait = scheduled - time.perf_counter_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        future = call.future(payloads[i % len(payloads)], timeout=CALL_TIMEOUT)
        future.add_done_callback(lambda f, s=scheduled: done(f, s))
        futures.append(future)
    for future in futures:
        try:
            future.result()
        except grpc.RpcError:
            pass  # counted by its callback
    time.sleep(0.01)  # the last callbacks run on gRPC's threads


ProgressFn = Callable[[int, int], None]  # (requests answered so far, requests in the run)


def run_load(target: str, address: str, payloads: list[bytes], batch_size: int, load: Load,
             progress: ProgressFn | None = None, network: Network | None = None) -> RunResult:
    """``load.concurrency`` client processes against one server, calling the load's protocol's method;
    returns every successful request's latency. ``progress`` is called about every PROGRESS_EVERY seconds
    while the run goes on. With a ``network`` that is not direct, the clients call the server through its
    relaying proxy (warm-up included), which runs as long as the run."""
    with Relay(address, network) if network is not None and not network.direct else contextlib.nullcontext(address) as via:
        result = _run_load(target, via, payloads, batch_size, load, progress)
    return dataclasses.replace(result, network=network)


def _run_load(target: str, address: str, payloads: list[bytes], batch_size: int, load: Load,
              progress: ProgressFn | None) -> RunResult:
    method = PROTOCOLS[load.protocol].method
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(load.concurrency)
    results = ctx.Queue()
    answered = ctx.Value("q", 0)
    procs = [ctx.Process(target=_client, args=(address, method, payloads, load, barrier, results, answered), daemon=True)
             for _ in range(load.concurrency)]
    for p in procs:
        p.start()
    collected = []
    deadline = time.monotonic() + START_TIMEOUT + load.requests * CALL_TIMEOUT
    reported = time.monotonic()
    try:
        while len(collected) < len(procs):
            try:
                collected.append(results.get(timeout=PROGRESS_EVERY))
            except queue.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in procs):
                    raise RuntimeError(f"load generator: {len(procs) - len(collected)} of {len(procs)} clients "
                                       "did not report (died or timed out)") from None
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY and len(collected) < len(procs):
                progress(answered.value, load.total)
                reported = time.monotonic()
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    latencies = np.concatenate([c[0] for c in collected]) / 1e6
    errors: dict[str, int] = {}
    for _, errs, _, _ in collected:
        for code, n in errs.items():
            errors[code] = errors.get(code, 0) + n
    wall = (max(c[3] for c in collected) - min(c[2] for c in collected)) / 1e9
    return RunResult(target, load.concurrency, batch_size, latencies, errors, wall, load)


def served_accuracy(address: str, model_name: str, input_name: str, output_name: str, x: np.ndarray, y: np.ndarray,
                    batch: int = 512, version: int | None = None) -> float:
    """Accuracy of the endpoint's answers on labelled samples, asked with the stock TF Serving client (of one
    version of the model, or the latest)."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from fpgaflow_inference.tensors import from_array, to_array

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        predicted = []
        for i in range(0, len(x), batch):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            if version is not None:
                request.model_spec.version.value = version
            request.inputs[input_name].CopyFrom(from_array(x[i : i + batch]))
            response = stub.Predict(request, timeout=120)
            predicted.append(to_array(response.outputs[output_name], output_name).argmax(axis=1))
    return float((np.concatenate(predicted) == y).mean())


def discover_input(address: str, model: str, proto: str) -> tuple[str, tuple[int, ...]]:
    """The model's input name and a sample's shape ((features,), or an image's), from the endpoint's own metadata (TF Serving
    GetModelMetadata signature_def, or v2 ModelMetadata): what a client of any such server can ask."""
    with grpc.insecure_channel(address) as channel:
        if proto == "v2":
            from fpgaflow_inference.v2 import grpc_predict_v2_pb2 as v2
            from fpgaflow_inference.v2 import grpc_predict_v2_pb2_grpc as v2_grpc

            reply = v2_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(v2.ModelMetadataRequest(name=model), timeout=30)
            [tensor] = reply.inputs[:1] or [None]
            if tensor is None:
                raise ValueError(f"model {model!r} at {address} lists no inputs")
            return tensor.name, tuple(int(d) for d in tensor.shape[1:])
        from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        reply.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        name, info = next(iter(signature.inputs.items()))
        return name, tuple(int(d.size) for d in info.tensor_shape.dim[1:])


CSV_COLUMNS = ["target", "network", "rtt_ms", "bandwidth_mbps", "protocol", "mode", "offered_rps", "concurrency", "batch_size",
               "requests", "ok", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_rps", "throughput_samples_per_s",
               "wall_seconds"]


def csv_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """results.csv's header and rows: CSV_COLUMNS of each run, then its errors as CODE=N;CODE=N."""
    return [*CSV_COLUMNS, "errors"], [[*(row.get(c, "") for c in CSV_COLUMNS),
                                       ";".join(f"{k}={v}" for k, v in row["errors"].items())] for row in rows]


def latency_key(target: str, batch_size: int, concurrency: int, network: str | None = None) -> str:
    """The name of one run's per-request latencies in latencies.npz: cpu_b1_c4, or cpu@remote_b1_c4 where a
    benchmark measured several networks."""
    return f"{target}{'@' + network if network else ''}_b{batch_size}_c{concurrency}"


def scan(target: str, address: str, model: str, input_name: str, x: np.ndarray, batch_sizes: list[int],
         concurrencies: list[int], requests: int, warmup: int = 0, rate: float | None = None, proto: str = "tfserving",
         say: Callable[[str], None] = print, network: Network | None = None,
         key_network: bool = False) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every (batch size, number of clients) run against one endpoint, from the clients' ``network``: the
    summary rows and, by :func:`latency_key` (with the network's name where ``key_network``), every request's
    latency. Prints one line a run and progress while it goes."""
    rows, record = [], {}
    shown = network.name if key_network and network else None  # the network's name in labels and keys
    for batch_size in batch_sizes:
        requests_bytes = payloads(protocol(proto), model, input_name, x, batch_size)
        for concurrency in concurrencies:
            label = f"{target}{' ' + shown if shown else ''} b{batch_size} x{concurrency}"
            started = time.monotonic()

            def progress(done, total, label=label, started=started):
                if time.monotonic() - started > PROGRESS_EVERY:
                    say(f"{label}: {done:,}/{total:,} requests ({done / total:.0%})")

            load = Load(concurrency, requests, warmup, rate, proto)
            result = run_load(target, address, requests_bytes, batch_size, load, progress=progress, network=network)
            row = result.summary()
            record[latency_key(target, batch_size, concurrency, shown)] = result.latencies_ms
            rows.append(row)
            say(f"{label:<18} p50 {row.get('p50_ms', float('nan')):8.3f} ms  p99 {row.get('p99_ms', float('nan')):8.3f} ms  "
                f"{row['throughput_rps']:9.1f} req/s  {row['throughput_samples_per_s']:10.1f} samples/s  "
                f"errors {row['errors'] or 0}")
    return rows, record


def health_ok(address: str, timeout: float = 1.0) -> bool:
    """Whether the gRPC server at ``address`` answers grpc.health.v1 with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False

