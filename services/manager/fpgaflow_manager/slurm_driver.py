"""One experiment's run for fpgaflow server's Slurm executor:
``python -m fpgaflow_manager.slurm_driver MANIFEST --home HOME [--partition P] [--cpus N] [--memory M]
[--max-resubmits K] [--git-info FILE] [--jobs-file FILE] [--replace]``.

It is `fpgaflow run` (``fpgaflow.cli.cmd_run``) with the stages as Slurm jobs: the local runner with a stage
launcher that submits each stage command (``fpgaflow_manager.executors.slurm``), and no local Prometheus (the
stages run elsewhere). It runs on the server's machine and only follows the jobs; its output is the entry's run
log: the trials' progress, each job's submission, start and end, and the report. A SIGTERM (a cancel) stops it as
Ctrl-C does: its runner cancels every job it submitted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from fpgaflow.errors import FpgaflowError
from fpgaflow.processes import interrupt_on_sigterm
from fpgaflow.report import print_report
from fpgaflow.runner import LocalRunner, ProgressFn, RunSettings
from fpgaflow.spec import load_experiment
from fpgaflow_manager.executors.slurm import SlurmLauncher, SlurmSettings, say_line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fpgaflow_manager.slurm_driver", description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--home", required=True, help="the run store (on a file system the nodes share)")
    p.add_argument("--partition", help="where the jobs run (default: the cluster's default partition)")
    p.add_argument("--cpus", type=int, default=SlurmSettings.cpus, help="CPUs of each job")
    p.add_argument("--memory", help="memory of each job, as sbatch --mem takes it (default: the cluster's)")
    p.add_argument("--max-resubmits", type=int, default=SlurmSettings.max_resubmits,
                   help="submissions again of a job Slurm killed (time limit, preemption, node failure)")
    p.add_argument("--git-info", type=Path, help="the manifest's git state (JSON), as `fpgaflow run --git-info`")
    p.add_argument("--jobs-file", type=Path, help="append each submitted job's id to this file")
    p.add_argument("--replace", action="store_true", help="discard earlier results of an experiment whose spec changed")
    return p.parse_args(argv)


def progress_lines() -> ProgressFn:
    """The runner's progress as log lines: a trial's line each time what it does changes."""
    last: dict[str, str] = {}

    def update(trial: str, what: str) -> None:
        if last.get(trial) != what:
            last[trial] = what
            say_line(f"{trial}: {what}" if trial else what)

    return update


def run(args: argparse.Namespace) -> int:
    settings = SlurmSettings(partition=args.partition, cpus=args.cpus, memory=args.memory,
                             max_resubmits=args.max_resubmits)
    path = Path(args.manifest)
    experiment = load_experiment(path)
    git = json.loads(args.git_info.read_text()) if args.git_info else None
    launcher = SlurmLauncher(settings, jobs_file=args.jobs_file.resolve() if args.jobs_file else None)
    # the home resolved: the stage commands name their trial folders by it, and run in the jobs' folder
    run_settings = RunSettings(home=Path(args.home).resolve(), replace=args.replace, prometheus=False, git=git,
                               stage_launcher=launcher)
    runner = LocalRunner(experiment, path, run_settings, progress=progress_lines())
    say_line(f"experiment {experiment.name}: {len(runner.trials)} trial(s), results in {runner.folder}; "
             f"stages as Slurm jobs ({settings.cpus} CPU{'s' * (settings.cpus != 1)} each, partition "
             f"{settings.partition or 'default'})")
    summaries = runner.run()
    print_report(Console(highlight=False, width=160), experiment.name, summaries, runner.folder / "report.md")
    return 0 if all(s["phase"] == "Succeeded" for s in summaries) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_sigterm()  # a cancel: the runner stops (scancels) its jobs, as on Ctrl-C
    try:
        return run(args)
    except KeyboardInterrupt:
        say_line("interrupted: every Slurm job of the run was cancelled")
        return 130
    except FpgaflowError as exc:
        print(f"fpgaflow slurm driver: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
