"""`fpgaflow serve` and `fpgaflow bench`, registered with the fpgaflow command through the
``fpgaflow.commands`` entry point."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fpgaflow.cli import add_stage_arguments
from fpgaflow.errors import ConfigError, FpgaflowError
from fpgaflow.spec import TARGETS
from fpgaflow.trial import TrialDir, record_failure, run_stage


def cmd_bench(args) -> int:
    """The bench stage with --trial-dir; with --address, the load generator on its own."""
    if args.trial_dir:
        if args.address:
            raise ConfigError("give --trial-dir or --address, not both")
        from fpgaflow_inference.bench import run

        return run_stage("bench", args.trial_dir, run, force=args.force)
    if not args.address or not args.model:
        raise ConfigError("--trial-dir, or --address with --model, is required")
    if args.rtt_ms < 0 or (args.bandwidth_mbps is not None and args.bandwidth_mbps <= 0):
        raise ConfigError("--rtt-ms must be 0 or more and --bandwidth-mbps more than 0")
    from fpgaflow_inference.bench import run_standalone
    from fpgaflow_inference.netem import Network

    network = (Network("remote", args.rtt_ms, args.bandwidth_mbps)
               if args.rtt_ms > 0 or args.bandwidth_mbps is not None else None)
    rows = run_standalone(args.address, args.model, args.out, proto=args.protocol, input_name=args.input_name,
                          features=args.features, data=args.data, batch_sizes=args.batch_size, concurrency=args.concurrency,
                          requests=args.requests, warmup=args.warmup, rate=args.rate, network=network)
    return 0 if all(r["ok"] == r["requests"] for r in rows) else 1


def cmd_serve(args) -> int:
    trial = TrialDir(Path(args.trial_dir))
    out = trial.stage_dir("serve") / args.target
    # Before TensorFlow loads: one thread per request's computation, requests in parallel on the gRPC
    # workers. Spinning oneDNN/OpenMP threads otherwise take the cores the server's threads need.
    os.environ["OMP_NUM_THREADS"] = str(args.compute_threads)
    try:
        from fpgaflow_inference.server import ServerSettings, run

        settings = ServerSettings.from_spec(
            trial.spec().serve, host=args.host, port=args.port, metrics_port=args.metrics_port, workers=args.workers,
            max_batch_size=args.max_batch_size, max_latency_micros=args.max_latency_micros,
            compute_threads=args.compute_threads, inline_below_micros=args.inline_below_micros, pacing=args.pace,
            grace_seconds=args.grace_seconds, max_message_bytes=args.max_message_bytes,
            max_concurrent_streams=args.max_concurrent_streams, tls_cert=args.tls_cert, tls_key=args.tls_key, front=args.front)
        return run(trial, args.target, settings)
    except FpgaflowError as exc:
        return record_failure(f"serve {args.target}", out, exc.reason, str(exc), exc.exit_code)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark a trial's running servers, or any TF Serving / v2 endpoint (--address)")
    add_stage_arguments(p, required=False)
    g = p.add_argument_group("on its own, against any endpoint (instead of --trial-dir)")
    g.add_argument("--address", help="HOST:PORT of a TF Serving or Open Inference v2 gRPC endpoint")
    g.add_argument("--model", help="model name at that endpoint")
    g.add_argument("--protocol", choices=["tfserving", "v2"], default="tfserving")
    g.add_argument("--input-name", help="input tensor name (default: from the endpoint's metadata)")
    g.add_argument("--features", type=int, help="values per sample (default: from the endpoint's metadata)")
    g.add_argument("--data", type=Path, help="inputs: an .npz with x, or an .npy (default: random normal samples)")
    g.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="numbers of client processes to scan")
    g.add_argument("--batch-size", type=int, nargs="+", default=[1], help="samples per request, scanned")
    g.add_argument("--requests", type=int, default=500, help="timed requests per client")
    g.add_argument("--warmup", type=int, default=20, help="untimed requests per client first")
    g.add_argument("--rate", type=float, help="open loop: requests per second of all clients together")
    g.add_argument("--rtt-ms", type=float, default=0.0, help="clients at a modelled distance: round trip added by a "
                   "relaying proxy in the load generator (half each way), in ms")
    g.add_argument("--bandwidth-mbps", type=float, help="with the proxy: each direction's bandwidth limit, in Mbit/s")
    g.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for results and plots")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("serve", help="serve a trial's model over gRPC (TF Serving and Open Inference v2 APIs) with Prometheus metrics")
    p.add_argument("--trial-dir", required=True)
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--metrics-port", type=int, default=8000)
    p.add_argument("--workers", type=int, help="back-end calls running at once (default 1 with dynamic batching, 4 without)")
    p.add_argument("--compute-threads", type=int, default=1, help="threads one back-end call may use")
    p.add_argument("--inline-below-micros", type=int, help="back-end calls shorter than this (a running mean) run on "
                   "the event loop instead of a worker thread (default 300; 0: always on the workers)")
    p.add_argument("--max-batch-size", type=int, help="dynamic batching: most samples per back-end call, 1 = off "
                   "(default: the spec's serve.batching)")
    p.add_argument("--max-latency-micros", type=int, help="dynamic batching: longest wait for a batch to fill")
    p.add_argument("--pace", action=argparse.BooleanOptionalAction, default=None,
                   help="fpga: pace answers to one modelled device (default: the spec's serve.fpgaPacing)")
    p.add_argument("--grace-seconds", type=float, help="on SIGTERM, how long in-flight requests may take (default 30)")
    p.add_argument("--max-message-bytes", type=int, help="largest request or response (default 64 MiB)")
    p.add_argument("--max-concurrent-streams", type=int, help="concurrent calls per client connection (default: gRPC's)")
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this PEM certificate (chain)")
    p.add_argument("--tls-key", type=Path, help="the PEM private key of --tls-cert")
    p.add_argument("--front", choices=["auto", "native", "python"], help="who holds the port and does gRPC's "
                   "transport: the native front, a Go process that hands each prediction call to this server over a "
                   "Unix socket (fpgaflow-front: `make install` builds it, the inference image has it), or Python's "
                   "gRPC server; default auto: the native front where fpgaflow-front is installed")
    p.set_defaults(fn=cmd_serve)
