"""The `fpgaflow` command. Each subcommand translates its arguments and calls one function;
fpgaflow's errors become an exit code and one line here, and nowhere else.

The shared core's commands are defined here. The stage commands come from the service distributions
installed beside it: each names a ``register(subparsers)`` function under the ``fpgaflow.commands``
entry point group (``fpgaflow_trainer.cli`` adds ``train``, and so on), so the core imports no service.
A command whose service is not installed is still listed, and says which distribution it needs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path

from fpgaflow import __version__
from fpgaflow.errors import FpgaflowError, NotFound, NotInstalled
from fpgaflow.trial import STAGE_SERVICE

DEFAULT_HOME = "fpgaflow-runs"
COMMAND_GROUP = "fpgaflow.commands"  # entry points: NAME = "module:register", register(subparsers) adds commands


def home_folder(args) -> Path:
    """The run store folder of a command: --home, else $FPGAFLOW_HOME, else ./fpgaflow-runs."""
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
    from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from fpgaflow.processes import interrupt_on_sigterm
    from fpgaflow.report import print_report
    from fpgaflow.runner import LocalRunner, RunSettings
    from fpgaflow.spec import load_experiment

    path = Path(args.manifest)
    experiment = load_experiment(path)
    console = _console()
    git = json.loads(Path(args.git_info).read_text()) if args.git_info else None
    settings = RunSettings(home=home_folder(args), replace=args.replace, prometheus=not args.no_prometheus, git=git)
    interrupt_on_sigterm()  # a cancel stops the run as Ctrl-C does; the experiment is marked interrupted
    with Progress(SpinnerColumn(), TextColumn("{task.fields[trial]}"), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

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


def cmd_serve_bench(args) -> int:
    from fpgaflow.processes import interrupt_on_sigterm
    from fpgaflow.runner import LocalRunner, RunSettings
    from fpgaflow.trial import TrialDir

    td = TrialDir(Path(args.trial_dir))
    runner = LocalRunner.of_trial(td, RunSettings(home=td.root.resolve().parents[2], prometheus=False))
    interrupt_on_sigterm()
    try:
        runner.serve_and_bench(td, td.spec().serve.targets)
    finally:
        runner.procs.stop_all()
    return 0


def cmd_list(args) -> int:
    from rich.table import Table

    from fpgaflow.store import RunStore

    table = Table(title=f"experiments in {home_folder(args)}", title_justify="left")
    for column in ("name", "phase", "trials", "succeeded", "best emulated accuracy", "git commit", "updated"):
        table.add_column(column)
    for e in RunStore(home_folder(args)).experiments():
        best = f"{e['best_emulated']:.4f}" if e["best_emulated"] is not None else "—"
        commit = (e["git_commit"] or "—")[:10] + ("+dirty" if e["git_dirty"] else "")
        table.add_row(e["name"], e["phase"], str(e["trials"]), str(e["succeeded"] or 0), best, commit,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e["updated"])))
    _console().print(table)
    return 0


def cmd_show(args) -> int:
    from fpgaflow.report import print_report
    from fpgaflow.store import RunStore
    from fpgaflow.summary import stored_summaries

    store = RunStore(home_folder(args))
    record = store.experiment(args.name)
    if record is None:
        raise NotFound(f"no experiment named {args.name!r} in {store.home}")
    folder = Path(record["folder"])
    summaries = stored_summaries(folder, record["trials"])
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

    path, summaries = regenerate(RunStore(home_folder(args)), args.name)
    print_report(_console(), args.name, summaries, path)
    return 0


def cmd_export(args) -> int:
    from fpgaflow.store import RunStore

    text = RunStore(home_folder(args)).export_csv()
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


def add_stage_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """What every stage command takes: the trial folder (the stage contract, fpgaflow.trial) and --force."""
    p.add_argument("--trial-dir", required=required)
    p.add_argument("--force", action="store_true", help="redo the stage even when it finished before")


def _not_installed(distribution: str):
    def fn(args) -> int:
        raise NotInstalled(f"this command needs the {distribution} distribution, which is not installed here "
                           f"(pip install {distribution}, or `make install` in a checkout)")

    return fn


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    """The commands of the installed services (entry points), then a placeholder for each missing one."""
    for entry in sorted(metadata.entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    for command, service in STAGE_SERVICE.items():  # the stage commands: fpgaflow-<service> adds each
        if command not in sub.choices:
            distribution = f"fpgaflow-{service}"
            p = sub.add_parser(command, help=f"(not installed: needs {distribution})", add_help=False)
            p.set_defaults(fn=_not_installed(distribution), any_arguments=True)


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
    p.add_argument("--git-info", metavar="FILE",
                   help="the manifest folder's git state as JSON, when the manifest is a copy (fpgaflow server passes its submitter's)")
    home(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("serve-bench", help="a trial's servers and its bench stage against them, on this machine "
                       "(what a batch job of fpgaflow server's Slurm executor runs)")
    add_stage_arguments(p)
    p.set_defaults(fn=cmd_serve_bench)

    add_service_commands(sub)

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
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):  # a missing service's command takes any
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.fn(args)
    except FpgaflowError as exc:
        print(f"fpgaflow {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fpgaflow {args.command}: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
