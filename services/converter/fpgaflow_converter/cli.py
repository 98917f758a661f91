"""`fpgaflow convert` and `fpgaflow estimate`, registered with the fpgaflow command through the ``fpgaflow.commands`` entry point."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fpgaflow.cli import add_stage_arguments
from fpgaflow.trial import run_stage


def cmd_convert(args) -> int:
    from fpgaflow_converter.convert import run

    return run_stage("convert", args.trial_dir, run, force=args.force)


def _pct(value) -> str:
    return "" if value is None else f"±{100 * value:.0f}%"


def cmd_estimate(args) -> int:
    from fpgaflow_converter.estimate_file import grid, read_keras_file

    nodes, kernels = read_keras_file(Path(args.model))
    rows = grid(nodes, kernels, args.precision, args.reuse, strategy=args.strategy, io_type=args.io_type,
                backend=args.backend, clock_period_ns=args.clock,
                accumulator=args.accumulator)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    unc = rows[0]["uncertainty"]
    table = Table(title=f"{args.model}: {args.backend} HLS, {args.io_type}, {args.strategy}, {args.clock:g} ns; "
                  f"estimated, mean error on held-out synthesis reports: DSP {_pct(unc['dsp'])}, LUT {_pct(unc['lut'])}, "
                  f"FF {_pct(unc['ff'])}, latency {_pct(unc['latency_cycles'])}", title_justify="left")
    table.add_column("precision", no_wrap=True)
    for column in ("RF", "DSP", "LUT", "FF", "BRAM18", "cycles", "ns", "II"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["precision"], str(row["reuse_factor"]), *(f"{row[k]:,}" for k in
                      ("dsp", "lut", "ff", "bram18", "latency_cycles")), f"{row['latency_ns']:g}", str(row["ii_cycles"]))
    console = Console()
    console.print(table)
    for caveat in dict.fromkeys(c for row in rows for c in row["caveats"]):
        where = sorted({f"{row['precision']} RF {row['reuse_factor']}" for row in rows if caveat in row["caveats"]})
        console.print(f"extrapolated ({', '.join(where) if len(where) < len(rows) else 'every row'}): {caveat}",
                      highlight=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a trained model with hls4ml")
    add_stage_arguments(p)
    p.set_defaults(fn=cmd_convert)
    p = sub.add_parser("estimate", help="FPGA resources and latency of a .keras model over precisions and reuse factors, "
                                        "in a second (no hls4ml, no training)")
    p.add_argument("model", help="a Keras .keras file")
    p.add_argument("--precision", nargs="+", default=["ap_fixed<16,6>"], help="one or more types, e.g. 'ap_fixed<8,3>'")
    p.add_argument("--reuse", nargs="+", type=int, default=[1], help="one or more reuse factors")
    p.add_argument("--strategy", choices=("Latency", "Resource"), default="Latency")
    p.add_argument("--io-type", choices=("io_parallel", "io_stream"), default="io_parallel")
    p.add_argument("--backend", choices=("Vitis", "Vivado"), default="Vitis")
    p.add_argument("--clock", type=float, default=5.0, help="clock period in ns")
    p.add_argument("--accumulator", default="exact",
                   help="accumulator type: 'exact' (as fpgaflow's convert stage: every sum fits) or a type such as "
                        "'ap_fixed<16,6>' (hls4ml's 'model' granularity uses the precision)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(fn=cmd_estimate)
