"""Reports: a trial folder read into a summary, summaries into markdown and terminal tables."""

from __future__ import annotations

from pathlib import Path

from fpgaflow.trial import STAGES, TrialDir, read_json

TARGET_NOTES = {"cpu": "TensorFlow, CPU", "gpu": "TensorFlow, GPU", "fpga": "hls4ml C sim *"}
FOOTNOTE = ("* fpga: hls4ml's bit-exact C simulation of the firmware on one CPU core; its times are the "
            "emulation's wall time, not the device's latency.")


def trial_summary(trial: TrialDir) -> dict:
    """What a trial folder says about itself: phase, failing stage and reason, accuracies, benchmark."""
    meta = trial.meta()
    summary: dict = {"name": trial.root.name, "parameters": meta.get("parameters", {}), "phase": "Pending", "stage": None}
    stages = trial.stages()
    summary["stages"] = list(stages)
    if stages != STAGES:
        summary["note"] = "trained by train.command without a Keras model: convert, serve and bench do not apply"
    for stage in stages:
        error = trial.error(stage) if stage != "serve" else None
        if error:
            summary.update(phase="Failed", stage=stage, reason=error["reason"], message=error["message"])
            break
        if stage != "serve" and not trial.done(stage):
            summary["stage"] = stage
            break
    else:
        summary.update(phase="Succeeded", stage=None)
    train, convert, bench = trial.result("train"), trial.result("convert"), trial.result("bench")
    fidelity = (convert or {}).get("fidelity", {})
    train = train or {}
    summary["accuracy"] = {
        "float": train.get("accuracy_float", train.get("accuracy")),
        "fixed": train.get("accuracy_qat"),  # the quantization-aware model's own accuracy, when the spec trains one
        "emulated": fidelity.get("accuracy_emulated"),
    }
    summary["argmax_agreement"] = fidelity.get("argmax_agreement")
    summary["fidelity"] = fidelity or None
    summary["dataset"] = train.get("dataset")
    summary["benchmark"] = bench
    summary["timing"] = (convert or {}).get("timing")  # the converter's modelled device latency
    summary["estimate"] = (convert or {}).get("estimate")  # FPGA resources and latency, estimated without vendor tools
    summary["reuse_factor_corrections"] = (convert or {}).get("reuse_factor_corrections") or []
    train_dir = trial.stage_dir("train")
    summary["provenance"] = {name: read_json(train_dir / f"{name}.json") for name in ("git", "host")
                             if (train_dir / f"{name}.json").exists()} or None
    return summary


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def accuracy_rows(summaries: list[dict]) -> list[list[str]]:
    rows = []
    for s in summaries:
        params = ", ".join(f"{k}={v}" for k, v in s["parameters"].items()) or "—"
        acc = s["accuracy"]
        served = {t: v.get("accuracy_served") for t, v in ((s.get("benchmark") or {}).get("targets") or {}).items()}
        rows.append([
            s["name"], params, s["phase"] + (f" ({s.get('reason')})" if s.get("reason") else ""),
            _fmt(acc["float"]), _fmt(acc["fixed"]), _fmt(acc["emulated"]), _fmt(s["argmax_agreement"]),
            ", ".join(f"{t} {_fmt(v)}" for t, v in served.items() if v is not None) or "—",
        ])
    return rows


ACCURACY_HEADER = ["trial", "parameters", "phase", "float", "fixed (QAT)", "emulated", "argmax agreement", "served (via gRPC)"]
LATENCY_HEADER = ["trial", "target", "note", "clients", "p50 [ms]", "p99 [ms]", "mean [ms]", "throughput [req/s]", "errors"]


ESTIMATE_HEADER = ["trial", "parameters", "DSP", "LUT", "FF", "BRAM18", "latency [cycles]", "latency [ns]", "II [ns]"]


def estimate_rows(summaries: list[dict]) -> list[list[str]]:
    rows = []
    for s in summaries:
        est = s.get("estimate")
        if est:
            params = ", ".join(f"{k}={v}" for k, v in s["parameters"].items()) or "—"
            rows.append([s["name"], params, *(_fmt(est[k]) for k in ("dsp", "lut", "ff", "bram18", "latency_cycles")),
                         _fmt(est["latency_ns"], 1), _fmt(est["ii_ns"], 1)])
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, accuracy) points no other point beats: as cheap or cheaper and as accurate or more,
    better in one of the two."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


PARETO_COSTS = (("dsp", "DSP"), ("latency_ns", "latency [ns]"))


def sweep_points(summaries: list[dict]) -> list[dict]:
    """The finished trials with an emulated accuracy and an estimate, each marked on the Pareto front of
    accuracy against DSPs and against latency."""
    done = [s for s in summaries if s.get("estimate") and s["accuracy"].get("emulated") is not None]
    points = [{"name": s["name"], "parameters": s["parameters"], "accuracy": s["accuracy"]["emulated"],
               **{key: s["estimate"][key] for key, _ in PARETO_COSTS}} for s in done]
    for key, _ in PARETO_COSTS:
        for point, front in zip(points, pareto_front([(p[key], p["accuracy"]) for p in points]), strict=True):
            point[f"front_{key}"] = front
    return points


PARETO_HEADER = ["trial", "parameters", "emulated accuracy", "DSP", "latency [ns]", "front (DSP)", "front (latency)"]


def pareto_rows(points: list[dict]) -> list[list[str]]:
    return [[p["name"], ", ".join(f"{k}={v}" for k, v in p["parameters"].items()) or "—", _fmt(p["accuracy"]),
             _fmt(p["dsp"]), _fmt(p["latency_ns"], 1), "yes" if p["front_dsp"] else "", "yes" if p["front_latency_ns"] else ""]
            for p in sorted(points, key=lambda p: -p["accuracy"])]


def latency_rows(summaries: list[dict]) -> list[list[str]]:
    rows = []
    for s in summaries:
        bench = s.get("benchmark") or {}
        for target, info in (bench.get("targets") or {}).items():
            if info["status"] != "ready":
                rows.append([s["name"], target, f"{info['status']}: {info.get('reason', '')}", *["—"] * 6])
                continue
            note = TARGET_NOTES.get(target, "")
            if target == "fpga" and s.get("timing"):
                note += f" (device, modelled: {s['timing']['latency_ns']:g} ns, II {s['timing']['ii_ns']:g} ns)"
            for run in (r for r in bench.get("runs", []) if r["target"] == target):
                errors = sum(run["errors"].values())
                rows.append([
                    s["name"], target, note, str(run["concurrency"]), _fmt(run.get("p50_ms"), 3),
                    _fmt(run.get("p99_ms"), 3), _fmt(run.get("mean_ms"), 3), _fmt(run["throughput_rps"], 1), str(errors),
                ])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(name: str, summaries: list[dict], facts: dict) -> str:
    synthetic = any((s.get("dataset") or {}).get("synthetic") for s in summaries)
    parts = [f"# Experiment `{name}`", ""]
    parts += [f"- {k}: {v}" for k, v in facts.items()]
    if synthetic:
        parts.append("- data: **synthetic jets** (fpgaflow's generator with the hls4ml LHC jet features), not the real data set")
    parts += ["", "## Accuracy", "", _md_table(ACCURACY_HEADER, accuracy_rows(summaries)), ""]
    parts += ["## FPGA resources and latency (estimated without vendor tools; docs/estimates.md says how)", "",
              _md_table(ESTIMATE_HEADER, estimate_rows(summaries)), ""]
    parts += [f"- {s['name']}: reuse factor {c['asked']} of `{c['layer']}` ({c['shape'][0]}x{c['shape'][1]}) is not valid by "
              f"hls4ml's rule; {c['used']} was used" for s in summaries for c in s.get("reuse_factor_corrections", [])]
    points = sweep_points(summaries)
    if len(points) > 1:
        parts += ["## Sweep: accuracy against DSPs and latency (Pareto front: no trial is cheaper and as accurate)", "",
                  _md_table(PARETO_HEADER, pareto_rows(points)), "", "![Pareto front](pareto.png)", ""]
    parts += ["## Latency and throughput (SONIC-style: N clients, each sending requests one after another)", ""]
    parts += [_md_table(LATENCY_HEADER, latency_rows(summaries)), "", FOOTNOTE, ""]
    for s in summaries:
        if s["phase"] == "Failed":
            parts.append(f"- **{s['name']} failed** in `{s['stage']}` ({s['reason']}): {s['message']}")
        elif s.get("note"):
            parts.append(f"- {s['name']}: {s['note']}")
    plots = [f"![{s['name']} {p}]({s['name']}/{d}/{p}.png)" for s in summaries
             for d, p in (("train", "training"), ("convert", "profiling"), ("bench", "latency"), ("bench", "throughput"))
             if d in s.get("stages", STAGES)]
    parts += ["", "## Plots", "", *plots, ""]
    return "\n".join(parts)


def print_report(console, name: str, summaries: list[dict], report_path: Path | None = None) -> None:
    from rich.table import Table

    for title, header, rows in (
        (f"{name}: accuracy on the test set", ACCURACY_HEADER, accuracy_rows(summaries)),
        (f"{name}: FPGA resources and latency, estimated", ESTIMATE_HEADER, estimate_rows(summaries)),
        (f"{name}: latency and throughput per target", LATENCY_HEADER, latency_rows(summaries)),
    ):
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(FOOTNOTE)
    if any((s.get("dataset") or {}).get("synthetic") for s in summaries):
        console.print("[yellow]data: synthetic jets (not the real hls4ml LHC jet data set)[/yellow]")
    for s in summaries:
        if s["phase"] == "Failed":
            console.print(f"[red]{s['name']} failed in {s['stage']} ({s['reason']}): {s['message']}[/red]")
        elif s.get("note"):
            console.print(f"{s['name']}: {s['note']}")
    if report_path:
        console.print(f"report: {report_path}")
