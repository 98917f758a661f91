"""The `fpgaflow` command. Each subcommand translates its arguments and calls one function;
fpgaflow's errors become an exit code and one line here, and nowhere else."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

from fpgaflow import __version__
from fpgaflow.errors import FpgaflowError

DEFAULT_HOME = "fpgaflow-runs"


def _home(args) -> Path:
    return Path(args.home or os.environ.get("FPGAFLOW_HOME") or DEFAULT_HOME)


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a log file or a pipe: wide enough for the tables, not wrapped at 80
        console = Console(highlight=False, width=160)
    return console


# ------------------------------------------------------------------------------------------ commands


def cmd_validate(args) -> int:
    from fpgaflow.plan import plan_trials
    from fpgaflow.spec import load_experiment

    for path in args.files:
        experiment = load_experiment(path)
        trials = plan_trials(experiment.spec)
        print(f"{path}: valid Experiment {experiment.name!r}, {len(trials)} trial{'s' * (len(trials) != 1)}")
    return 0


def cmd_run(args) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fpgaflow.report import print_report
    from fpgaflow.runner import LocalRunner, RunSettings
    from fpgaflow.spec import load_experiment

    path = Path(args.manifest)
    experiment = load_experiment(path)
    console = _console()
    settings = RunSettings(home=_home(args), replace=args.replace, prometheus=not args.no_prometheus)
    with Progress(SpinnerColumn(), TextColumn("{task.fields[trial]}"), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def update(trial: str, what: str) -> None:
            if trial in tasks:
                progress.update(tasks[trial], description=what)
            elif not trial:  # a note about the whole run (live metrics), printed above the progress lines
                progress.console.print(what)

        runner = LocalRunner(experiment, path, settings, progress=update)
        console.print(f"experiment [bold]{experiment.name}[/bold]: {len(runner.trials)} trial(s), results in {runner.folder}")
        for trial in runner.trials:
            tasks[trial.name] = progress.add_task("queued", trial=trial.name)
        summaries = runner.run()
    print_report(console, experiment.name, summaries, runner.folder / "report.md")
    return 0 if all(s["phase"] == "Succeeded" for s in summaries) else 1


def _stage_command(stage: str):
    def command(args) -> int:
        from fpgaflow.trial import run_stage

        if stage == "train":
            from fpgaflow.trainer.train import run

            if args.metrics_port:
                run = functools.partial(run, metrics_address=(args.metrics_host, args.metrics_port))
                try:
                    return run_stage(stage, args.trial_dir, run, force=args.force)
                finally:
                    time.sleep(args.metrics_linger)  # the final values stay up for the next scrape
        elif stage == "convert":
            from fpgaflow.converter.convert import run
        else:
            from fpgaflow.inference.bench import run
        return run_stage(stage, args.trial_dir, run, force=args.force)

    return command


def _bench_arguments(p) -> None:
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
    g.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for results and plots")


def cmd_bench(args) -> int:
    """The bench stage with --trial-dir; with --address, the load generator on its own."""
    if args.trial_dir:
        if args.address:
            print("fpgaflow bench: give --trial-dir or --address, not both", file=sys.stderr)
            return 2
        return _stage_command("bench")(args)
    if not args.address or not args.model:
        print("fpgaflow bench: --trial-dir, or --address with --model, is required", file=sys.stderr)
        return 2
    from fpgaflow.inference.bench import run_standalone

    rows = run_standalone(args.address, args.model, args.out, proto=args.protocol, input_name=args.input_name,
                          features=args.features, data=args.data, batch_sizes=args.batch_size, concurrency=args.concurrency,
                          requests=args.requests, warmup=args.warmup, rate=args.rate)
    return 0 if all(r["ok"] == r["requests"] for r in rows) else 1


def cmd_serve(args) -> int:
    from fpgaflow.trial import TrialDir, record_failure

    trial = TrialDir(Path(args.trial_dir))
    out = trial.stage_dir("serve") / args.target
    # Before TensorFlow loads: one thread per request's computation, requests in parallel on the gRPC
    # workers. Spinning oneDNN/OpenMP threads otherwise take the cores the server's threads need.
    os.environ["OMP_NUM_THREADS"] = str(args.compute_threads)
    try:
        from fpgaflow.inference.server import ServerSettings, run

        settings = ServerSettings.from_spec(
            trial.spec().serve, host=args.host, port=args.port, metrics_port=args.metrics_port, workers=args.workers,
            max_batch_size=args.max_batch_size, max_latency_micros=args.max_latency_micros, pacing=args.pace,
            grace_seconds=args.grace_seconds, max_message_bytes=args.max_message_bytes,
            max_concurrent_streams=args.max_concurrent_streams, tls_cert=args.tls_cert, tls_key=args.tls_key)
        return run(trial, args.target, settings)
    except FpgaflowError as exc:
        return record_failure(f"serve {args.target}", out, exc.reason, str(exc), exc.exit_code)


def cmd_list(args) -> int:
    from rich.table import Table

    from fpgaflow.store import RunStore

    table = Table(title=f"experiments in {_home(args)}", title_justify="left")
    for column in ("name", "phase", "trials", "succeeded", "best emulated accuracy", "git commit", "updated"):
        table.add_column(column)
    for e in RunStore(_home(args)).experiments():
        best = f"{e['best_emulated']:.4f}" if e["best_emulated"] is not None else "—"
        commit = (e["git_commit"] or "—")[:10] + ("+dirty" if e["git_dirty"] else "")
        table.add_row(e["name"], e["phase"], str(e["trials"]), str(e["succeeded"] or 0), best, commit,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e["updated"])))
    _console().print(table)
    return 0


def cmd_show(args) -> int:
    from fpgaflow.report import print_report, trial_summary
    from fpgaflow.store import RunStore
    from fpgaflow.trial import TrialDir

    store = RunStore(_home(args))
    record = store.experiment(args.name)
    if record is None:
        raise FpgaflowError(f"no experiment named {args.name!r} in {store.home}", reason="NotFound")
    folder = Path(record["folder"])
    summaries = [trial_summary(TrialDir(folder / t["name"])) for t in record["trials"]]
    if args.json:
        print(json.dumps({**record, "trials": summaries}, indent=1, default=str))
        return 0
    console = _console()
    console.print(f"[bold]{record['name']}[/bold]: {record['phase']}, git {record['git_commit'] or '—'}, folder {folder}")
    print_report(console, record["name"], summaries, folder / "report.md")
    return 0


def cmd_report(args) -> int:
    from fpgaflow.report import print_report, regenerate
    from fpgaflow.store import RunStore

    path, summaries = regenerate(RunStore(_home(args)), args.name)
    print_report(_console(), args.name, summaries, path)
    return 0


def cmd_export(args) -> int:
    from fpgaflow.store import RunStore

    text = RunStore(_home(args)).export_csv()
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_generate(args) -> int:
    from fpgaflow.schema import write_generated

    for path in write_generated(Path(args.root)):
        print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpgaflow", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"fpgaflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def home(p):
        p.add_argument("--home", help=f"run store folder (default: $FPGAFLOW_HOME or ./{DEFAULT_HOME})")

    p = sub.add_parser("validate", help="check Experiment manifests")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("run", help="run an Experiment manifest on this machine, end to end")
    p.add_argument("manifest")
    p.add_argument("--replace", action="store_true", help="discard earlier results of this experiment when its spec changed")
    p.add_argument("--no-prometheus", action="store_true",
                   help="do not start a local Prometheus scraping the run (it starts when `prometheus` is installed)")
    home(p)
    p.set_defaults(fn=cmd_run)

    for stage, text in (("train", "train the model of a trial"), ("convert", "convert a trained model with hls4ml"),
                        ("bench", "benchmark a trial's running servers, or any TF Serving / v2 endpoint (--address)")):
        p = sub.add_parser(stage, help=text)
        p.add_argument("--trial-dir", required=stage != "bench")
        p.add_argument("--force", action="store_true", help="redo the stage even when it finished before")
        if stage == "bench":
            _bench_arguments(p)
        if stage == "train":
            p.add_argument("--metrics-port", type=int, default=0, help="serve live training metrics (Prometheus) on this port")
            p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics port")
            p.add_argument("--metrics-linger", type=float, default=0.0, metavar="SECONDS",
                           help="keep serving the final metrics this long after training ends (a scrape interval or more)")
        p.set_defaults(fn=cmd_bench if stage == "bench" else _stage_command(stage))

    p = sub.add_parser("serve", help="serve a trial's model over gRPC (TF Serving and Open Inference v2 APIs) with Prometheus metrics")
    p.add_argument("--trial-dir", required=True)
    p.add_argument("--target", required=True, choices=["cpu", "gpu", "fpga"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--metrics-port", type=int, default=8000)
    p.add_argument("--workers", type=int, help="back-end calls running at once (default 1 with dynamic batching, 4 without)")
    p.add_argument("--compute-threads", type=int, default=1, help="threads one back-end call may use")
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
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("list", help="experiments in the run store")
    home(p)
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("show", help="one experiment's trials and results")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    home(p)
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("report", help="rewrite one experiment's report.md, report.html and plots from its run store folder")
    p.add_argument("name")
    home(p)
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("export", help="every trial of every experiment as CSV")
    p.add_argument("--csv", action="store_true", help="CSV format (the only one for now)")
    p.add_argument("-o", "--output")
    home(p)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("generate", help="regenerate the CRD and JSON schema (from the spec model) and the Grafana dashboard")
    p.add_argument("--root", default=".", help="repository root")
    p.set_defaults(fn=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ info and warning lines (oneDNN, CUDA probing, float64 graph passes) drown the
    # progress lines; set TF_CPP_MIN_LOG_LEVEL=0 to see them. Must be set before TensorFlow is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except FpgaflowError as exc:
        print(f"fpgaflow {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fpgaflow {args.command}: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
