"""`fpgaflow train` and `fpgaflow data check`, registered with the fpgaflow command through the ``fpgaflow.commands`` entry point."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from fpgaflow.cli import DEFAULT_HOME, add_stage_arguments, home_folder
from fpgaflow.errors import FpgaflowError
from fpgaflow.trial import run_stage


def cmd_train(args) -> int:
    from fpgaflow_trainer.stage import run

    if not args.metrics_port:
        return run_stage("train", args.trial_dir, run, force=args.force)
    run = functools.partial(run, metrics_address=(args.metrics_host, args.metrics_port))
    try:
        return run_stage("train", args.trial_dir, run, force=args.force)
    finally:
        time.sleep(args.metrics_linger)  # the final values stay up for the next scrape


def cmd_data_check(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fpgaflow.spec import DatasetSpec, load_experiment
    from fpgaflow_trainer.datasets import cache_folder, load_dataset, progress_printer
    from fpgaflow_trainer.simulation.validation import check_set

    spec = load_experiment(args.manifest).spec.dataset if args.manifest else DatasetSpec()
    updates = {"samples": args.samples} if args.samples else {}
    if args.simulation_seed is not None:
        updates["simulation"] = spec.simulation.model_copy(update={"seed": args.simulation_seed})
    spec = DatasetSpec.model_validate({**spec.model_dump(by_alias=True), **updates})
    if spec.name != "jets":
        raise FpgaflowError(f"data check compares the jets data set's 16 features; this manifest's data set is {spec.name}",
                            reason="SpecError")
    home = home_folder(args)
    data = load_dataset(spec, cache_folder(home), progress_printer(spec.name))
    print(f"data check: {data.describe()['source']}; training the hls4ml tutorial's MLP for {args.epochs} epochs", flush=True)
    result = check_set(data, Path(args.out or home / "data-check"), args.epochs)
    table = Table(title="the public jet data set's known shapes", title_justify="left")
    for column in ("check", "expected", "measured", ""):
        table.add_column(column)
    for row in result["checks"]:
        table.add_row(escape(row["check"]), escape(row["expected"]), escape(row["measured"]),
                      "[green]ok[/green]" if row["passed"] else "[red]differs[/red]")
    console = Console()
    console.print(table)
    mlp = result["mlp"]
    console.print(f"hls4ml tutorial MLP (64-32-32-5), float: accuracy {mlp['accuracy']:.4f} on {mlp['test']:,} simulated "
                  f"test jets; the tutorial's on the public set (with its detector simulation): {mlp['published']}")
    console.print(escape(f"plot: {result['plot']}; all of it: {Path(result['plot']).parent / 'check.json'}"))
    return 0 if all(row["passed"] for row in result["checks"]) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the model of a trial")
    add_stage_arguments(p)
    p.add_argument("--metrics-port", type=int, default=0, help="serve live training metrics (Prometheus) on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics port")
    p.add_argument("--metrics-linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep serving the final metrics this long after training ends (a scrape interval or more)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("data", help="data sets: `data check` compares simulated jets with the public set's known shapes")
    data = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = data.add_parser("check", help="plot each feature per class, check the known shapes, train the tutorial MLP")
    p.add_argument("manifest", nargs="?", help="an Experiment manifest whose dataset (jets) to check; default: 20,000 jets")
    p.add_argument("--samples", type=int, help="jets to simulate (overrides the manifest's)")
    p.add_argument("--simulation-seed", type=int, help="the simulation's seed (overrides the manifest's)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the tutorial MLP (default 30, as the tutorial)")
    p.add_argument("--out", help="folder of the plot and check.json (default: data-check/ in the run store)")
    p.add_argument("--home", help=f"run store folder, whose datasets/ is the cache (default: $FPGAFLOW_HOME or ./{DEFAULT_HOME})")
    p.set_defaults(fn=cmd_data_check)
