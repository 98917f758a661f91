"""`fpgaflow train`, registered with the fpgaflow command through the ``fpgaflow.commands`` entry point."""

from __future__ import annotations

import argparse
import functools
import time

from fpgaflow.cli import add_stage_arguments
from fpgaflow.trial import run_stage


def cmd_train(args) -> int:
    from fpgaflow_trainer.train import run

    if not args.metrics_port:
        return run_stage("train", args.trial_dir, run, force=args.force)
    run = functools.partial(run, metrics_address=(args.metrics_host, args.metrics_port))
    try:
        return run_stage("train", args.trial_dir, run, force=args.force)
    finally:
        time.sleep(args.metrics_linger)  # the final values stay up for the next scrape


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the model of a trial")
    add_stage_arguments(p)
    p.add_argument("--metrics-port", type=int, default=0, help="serve live training metrics (Prometheus) on this port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics port")
    p.add_argument("--metrics-linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep serving the final metrics this long after training ends (a scrape interval or more)")
    p.set_defaults(fn=cmd_train)
