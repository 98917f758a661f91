"""`fpgaflow convert`, registered with the fpgaflow command through the ``fpgaflow.commands`` entry point."""

from __future__ import annotations

import argparse

from fpgaflow.cli import add_stage_arguments
from fpgaflow.trial import run_stage


def cmd_convert(args) -> int:
    from fpgaflow_converter.convert import run

    return run_stage("convert", args.trial_dir, run, force=args.force)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a trained model with hls4ml")
    add_stage_arguments(p)
    p.set_defaults(fn=cmd_convert)
