"""The estimate benchmark of ``make bench``: ``python -m benchmarks.estimates [--out O] [--rule4ml-python P]``.

fpgaflow's calibrated estimate and the rule4ml peer (its published predictors, run in their own virtual
environment by ``benchmarks/rule4ml_peer.py``) against the held-out synthesis reports of the calibration
table: the mean and worst relative error per backend and quantity, each beside issue 19's goal (met or not
within its scope: MLPs and issue 18's CNNs), both tools on the rows rule4ml can predict. Writes estimates.csv (every held-out row, both predictions) and
estimates.png (estimate against synthesis, log-log, per quantity).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fpgaflow_converter.calibration import (
    FLOOR,
    GOAL,
    Row,
    calibrated,
    cross_validation,
    predict,
    read_rows,
    relative_error,
)
from fpgaflow_converter.estimate import BACKENDS, QUANTITIES

DEFAULT_OUT = Path(".cache/bench/estimates")
DEFAULT_PEER = Path(".cache/bench/rule4ml-venv/bin/python")
PEER_SCRIPT = Path(__file__).with_name("rule4ml_peer.py")
LABELS = {"dsp": "DSP", "lut": "LUT", "ff": "FF", "latency_cycles": "latency [cycles]"}


def peer_designs(rows: list[Row]) -> list[dict]:
    return [{"id": str(r.index), "layers": r.layers, "precision": r.settings.precision,
             "reuse_factor": r.settings.reuse_factor, "strategy": r.settings.strategy, "part": r.part,
             "tool_version": r.tool_version} for r in rows]


def run_peer(python: Path, rows: list[Row]) -> dict:
    """rule4ml's predictions by row index (as str); {} when its environment is missing."""
    if not python.exists():
        print(f"rule4ml: no environment at {python} (bash benchmarks/rule4ml_venv.sh builds it); peer skipped")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(peer_designs(rows)))
        subprocess.run([str(python), str(PEER_SCRIPT), str(src), str(dst)], check=True)
        return json.loads(dst.read_text())


def error_table(rows: list[Row], peer: dict) -> list[dict]:
    """Per backend and quantity: rows, fpgaflow's mean and worst error, and on the rows rule4ml predicted both
    tools' mean error."""
    table = []
    for backend in BACKENDS:
        constants = calibrated(backend)
        by_design = cross_validation(backend)
        mine = [r for r in rows if r.backend == backend]
        for q in QUANTITIES:
            measured = [r for r in mine if r.measured[q] is not None]
            ours = [relative_error(predict(r, constants, q), r.measured[q], q) for r in measured]
            scoped = [relative_error(predict(r, constants, q), r.measured[q], q) for r in measured if r.in_goal_scope]
            both = [r for r in measured if (peer.get(str(r.index)) or {}).get(q) is not None]
            table.append({
                "backend": backend, "quantity": q, "rows": len(ours), "goal": GOAL[q],
                "fpgaflow_mean": sum(ours) / len(ours) if ours else None, "fpgaflow_worst": max(ours, default=None),
                "goal_rows": len(scoped), "goal_mean": sum(scoped) / len(scoped) if scoped else None,
                "by_design": by_design[q],
                "peer_rows": len(both),
                "fpgaflow_mean_on_peer_rows": (sum(relative_error(predict(r, constants, q), r.measured[q], q)
                                                   for r in both) / len(both)) if both else None,
                "rule4ml_mean": (sum(relative_error(float(peer[str(r.index)][q]), r.measured[q], q) for r in both)
                                 / len(both)) if both else None})
    return table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def print_table(table: list[dict]) -> None:
    print("held-out synthesis reports: mean relative error (|estimate - synthesis| / max(synthesis, floor); "
          f"floors {FLOOR}); 'in scope': the goal's rows (MLPs, issue 18's CNNs; not depthwise convolutions); "
          "'by design': each design left out of the fit in turn")
    print(f"{'backend':8} {'quantity':16} {'rows':>4} {'goal':>5} {'fpgaflow':>9} {'worst':>6} {'in scope':>8} "
          f"{'met':>4} {'by design':>9} | {'rows':>4} {'fpgaflow':>9} {'rule4ml':>8} {'better':>7}")
    for t in table:
        met = "yes" if t["goal_mean"] is not None and t["goal_mean"] <= t["goal"] else "no"
        better = ("—" if t["rule4ml_mean"] is None else
                  "fpgaflow" if t["fpgaflow_mean_on_peer_rows"] < t["rule4ml_mean"] else "rule4ml")
        print(f"{t['backend']:8} {LABELS[t['quantity']]:16} {t['rows']:>4} {_pct(t['goal']):>5} "
              f"{_pct(t['fpgaflow_mean']):>9} {_pct(t['fpgaflow_worst']):>6} {_pct(t['goal_mean']):>8} {met:>4} "
              f"{_pct(t['by_design']):>9} | "
              f"{t['peer_rows']:>4} "
              f"{_pct(t['fpgaflow_mean_on_peer_rows']):>9} {_pct(t['rule4ml_mean']):>8} {better:>7}")


def plot(rows: list[Row], fitted: list[Row], peer: dict, path: Path) -> None:
    from fpgaflow.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    for ax, q in zip(axes, QUANTITIES, strict=True):
        for subset, style in ((fitted, dict(color="lightgray", marker=".", label="fitted on")),
                              (rows, dict(color="tab:blue", marker="o", label="fpgaflow, held out"))):
            pts = [(r.measured[q], predict(r, calibrated(r.backend), q)) for r in subset if r.measured[q] is not None]
            ax.scatter([max(m, 0.5) for m, _ in pts], [max(p, 0.5) for _, p in pts], s=18, **style)
        pts = [(r.measured[q], float(peer[str(r.index)][q])) for r in rows
               if r.measured[q] is not None and (peer.get(str(r.index)) or {}).get(q) is not None]
        if pts:
            ax.scatter([max(m, 0.5) for m, _ in pts], [max(p, 0.5) for _, p in pts], s=22, marker="x",
                       color="tab:red", label="rule4ml, held out")
        lo = 0.5
        hi = max([r.measured[q] or 1 for r in rows + fitted] + [1]) * 2
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.fill_between([lo, hi], [lo * (1 - GOAL[q]), hi * (1 - GOAL[q])], [lo * (1 + GOAL[q]), hi * (1 + GOAL[q])],
                        color="tab:green", alpha=0.12, label=f"goal ±{100 * GOAL[q]:.0f}%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"synthesis {LABELS[q]}")
        ax.set_ylabel(f"estimate {LABELS[q]}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("fpgaflow's estimate against hls4ml designs' C synthesis (Vivado and Vitis HLS)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rule4ml-python", type=Path, default=DEFAULT_PEER)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    every = read_rows()
    held = [r for r in every if r.heldout]
    peer = run_peer(args.rule4ml_python, held)
    table = error_table(held, peer)
    print_table(table)
    (args.out / "estimates.json").write_text(json.dumps(table, indent=1))
    with (args.out / "estimates.csv").open("w") as f:
        f.write("row,backend,design,reuse_factor,io_type,quantity,synthesis,fpgaflow,rule4ml\n")
        for r in held:
            for q in QUANTITIES:
                theirs = (peer.get(str(r.index)) or {}).get(q)
                f.write(f"{r.index},{r.backend},{r.design},{r.settings.reuse_factor},{r.settings.io_type},{q},"
                        f"{r.measured[q]},{predict(r, calibrated(r.backend), q):.1f},{'' if theirs is None else theirs}\n")
    plot(held, [r for r in every if not r.heldout], peer, args.out / "estimates.png")
    print(f"wrote {args.out}/estimates.csv, estimates.json and estimates.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
