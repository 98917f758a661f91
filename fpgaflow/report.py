"""Reports: an experiment's trial summaries (fpgaflow.summary) into one document (a list of blocks)
rendered to markdown (report.md), to a self-contained HTML page (report.html) and to terminal tables;
write_report writes both files and the plots (each with its CSV) from the trial folders alone."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from fpgaflow.errors import NotFound
from fpgaflow.plots import modelled_networks, network_label, run_network, run_variant, samples_per_second
from fpgaflow.summary import experiment_facts, stored_summaries
from fpgaflow.trial import STAGES

TARGET_NOTES = {"cpu": "TensorFlow, CPU", "gpu": "TensorFlow, GPU", "fpga": "bit-exact emulator †"}
# (target, how its server's back-end description starts): the note where the server chose another runtime
RUNTIME_NOTES = {
    ("cpu", "LiteRT"): "LiteRT, CPU",  # the cpu server's usual runtime: TensorFlow serves what LiteRT cannot take
    ("fpga", "hls4ml C simulation"): "hls4ml C sim (fallback) †",  # not the vectorized emulator: hls4ml's own
}
NETWORK_NOTE = ("Network distance, modelled: the clients of the runs labelled {networks} reached each server through a "
                "relaying TCP proxy in the load generator, which holds every chunk of bytes half the round-trip time in "
                "each direction and paces it at the bandwidth limit where one is set. This kernel has no netem: the distance "
                "is modelled on this machine, not a real network; on-prem clients connect to the server directly. "
                "(SONIC measured its FPGA service at about 60 ms remote against 10 ms on-prem.)")
FOOTNOTE = ("† fpga: served by fpgaflow's vectorized bit-exact emulator of the firmware (the same bits as hls4ml's "
            "C simulation); its times are emulation wall time on CPU cores, not the device's latency, which the note "
            "gives as the converter models it.")


def data_sources(summaries: list[dict]) -> list[tuple[str, str]]:
    """(data set, where it came from) of the trials, each once: "simulated with Pythia 8.317.2 and FastJet 3.5.2,
    no detector simulation" with the set's size and pT window, or the file read."""
    found: dict[tuple[str, str], None] = {}
    for summary in summaries:
        data = summary.get("dataset") or {}
        if not data.get("source"):
            continue
        source, sim = data["source"], data.get("simulation") or {}
        if sim.get("ptWindowGeV"):
            low, high = sim["ptWindowGeV"]
            source += f" ({sum(sim['classes'].values()):,} jets of {', '.join(sim['classes'])}, pT {low:g}-{high:g} GeV, seed {sim['seed']})"
        found[(data.get("name", "data"), source)] = None
    return list(found)


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
RETRAIN_HEADER = ["trial", "target", "served: version 1 (fine-tuned in fixed point)",
                  "served: version 2 (head retrained on the firmware's featurizer outputs)", "change"]
RETRAIN_TEXT = ("The Brainwave recipe's last step (quantize.retrainHead): only the classifier head retrained on the "
                "featurizer's outputs on the training set as the firmware computes them, converted with the featurizer "
                "and served as version 2 beside version 1; accuracies of each version's answers over gRPC on the test set.")


def retrain_rows(summaries: list[dict]) -> list[list[str]]:
    """Per trial and target, the served accuracy of the model before (version 1) and after (version 2) its head
    was retrained on the firmware's featurizer outputs."""
    rows = []
    for s in summaries:
        for target, info in ((s.get("benchmark") or {}).get("targets") or {}).items():
            versions = info.get("accuracy_served_versions")
            if versions and "1" in versions and "2" in versions:
                change = versions["2"] - versions["1"]
                rows.append([s["name"], target, _fmt(versions["1"]), _fmt(versions["2"]), f"{change:+.4f}"])
    return rows
LATENCY_HEADER = ["trial", "target", "note", "batch", "clients", "p50 [ms]", "p99 [ms]", "mean [ms]", "throughput [req/s]",
                  "throughput [samples/s]", "errors"]


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


def estimate_caveats(summaries: list[dict]) -> list[str]:
    """Where an estimate goes beyond the synthesis reports it was fitted on, each once, with its trials."""
    trials: dict[str, list[str]] = {}
    for s in summaries:
        for caveat in (s.get("estimate") or {}).get("caveats", []):
            trials.setdefault(caveat, []).append(s["name"])
    return [f"extrapolated ({', '.join(names)}): {caveat}" for caveat, names in trials.items()]


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, accuracy) points no other point beats: as cheap or cheaper and as accurate or more,
    better in one of the two."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


PARETO_COSTS = (("dsp", "DSP"), ("latency_ns", "latency [ns]"))


def sweep_points(summaries: list[dict]) -> list[dict]:
    """The finished trials with an emulated accuracy and an estimate (and its relative uncertainty), each marked
    on the Pareto front of accuracy against DSPs and against latency."""
    done = [s for s in summaries if s.get("estimate") and s["accuracy"].get("emulated") is not None]
    points = [{"name": s["name"], "parameters": s["parameters"], "accuracy": s["accuracy"]["emulated"],
               **{key: s["estimate"][key] for key, _ in PARETO_COSTS},
               # the estimate's relative uncertainty (held-out error), 0 for estimates made before it had one
               **{f"{key}_error": (s["estimate"].get("uncertainty") or {}).get(key) or 0.0 for key, _ in PARETO_COSTS}}
              for s in done]
    for key, _ in PARETO_COSTS:
        for point, front in zip(points, pareto_front([(p[key], p["accuracy"]) for p in points]), strict=True):
            point[f"front_{key}"] = front
    return points


PARETO_HEADER = ["trial", "parameters", "emulated accuracy", "DSP", "latency [ns]", "front (DSP)", "front (latency)"]


def pareto_rows(points: list[dict]) -> list[list[str]]:
    return [[p["name"], ", ".join(f"{k}={v}" for k, v in p["parameters"].items()) or "—", _fmt(p["accuracy"]),
             _fmt(p["dsp"]), _fmt(p["latency_ns"], 1), "yes" if p["front_dsp"] else "", "yes" if p["front_latency_ns"] else ""]
            for p in sorted(points, key=lambda p: -p["accuracy"])]


def network_note(summaries: list[dict]) -> str | None:
    """What the report says of the modelled network distances, where a benchmark ran any."""
    runs = [r for s in summaries for r in ((s.get("benchmark") or {}).get("runs") or [])]
    labels = modelled_networks(runs)
    return NETWORK_NOTE.format(networks=" and ".join(f'"{label}"' for label in labels)) if labels else None


def target_note(target: str, info: dict, timing: dict | None) -> str:
    """What a target's times measure: its back end, and for fpga the converter's modelled device latency."""
    backend = str(info.get("backend", ""))
    note = next((text for (which, start), text in RUNTIME_NOTES.items() if which == target and backend.startswith(start)),
                TARGET_NOTES.get(target, ""))
    if target == "fpga" and timing:
        note += f" (device, modelled: {timing['latency_ns']:g} ns, II {timing['ii_ns']:g} ns"
        left_out = timing.get("unmodelled") or []
        note += f", without {len(left_out)} layers the estimate does not model: {', '.join(left_out)})" if left_out else ")"
    return note


def _target_runs(bench: dict, target: str) -> list[tuple[str, list[dict]]]:
    """A target's runs, split by network where the benchmark measured several ("fpga, remote (50 ms RTT,
    modelled)", in the order they ran), and by protocol and mode where its runs differ in them: [(label, runs)]."""
    every = bench.get("runs", [])
    several_networks = len({run_network(r) for r in every}) > 1
    runs = [r for r in every if r["target"] == target]
    groups: list[tuple[str, list[dict]]] = []
    for network in dict.fromkeys(run_network(r) for r in runs):
        mine = [r for r in runs if run_network(r) == network]
        label = f"{target}, {network_label(mine[0])}" if several_networks else target
        variants = sorted({run_variant(r) for r in mine})
        if len(variants) <= 1:
            groups.append((label, mine))
        else:
            groups += [(f"{label} ({v or 'default'})", [r for r in mine if run_variant(r) == v]) for v in variants]
    return groups or [(target, [])]


def _per_target(summaries: list[dict], row_fn) -> list[list[str]]:
    """Rows for every trial's targets: ``row_fn(trial, label, note, runs)`` for each group of a ready
    target's runs; for a target that was not ready, one row of its status and reason."""
    rows = []
    for s in summaries:
        bench = s.get("benchmark") or {}
        for target, info in (bench.get("targets") or {}).items():
            if info["status"] != "ready":
                rows.append([s["name"], target, f"{info['status']}: {info.get('reason', '')}", *["—"] * 8])
                continue
            note = target_note(target, info, s.get("timing"))
            for label, runs in _target_runs(bench, target):
                rows.extend(row_fn(s["name"], label, note, runs))
    return rows


def latency_rows(summaries: list[dict]) -> list[list[str]]:
    """Every benchmark run: one row per trial, target, batch size and number of clients."""
    def rows(trial, label, note, runs):
        return [[trial, label, note, str(run.get("batch_size", 1)), str(run["concurrency"]), _fmt(run.get("p50_ms"), 3),
                 _fmt(run.get("p99_ms"), 3), _fmt(run.get("mean_ms"), 3), _fmt(float(run["throughput_rps"]), 1),
                 _fmt(float(samples_per_second(run)), 1), str(sum(run["errors"].values()))]
                for run in sorted(runs, key=lambda r: (r.get("batch_size", 1), r["concurrency"]))]
    return _per_target(summaries, rows)


# ------------------------------------------------------------------ the service table (SONIC's question)

SERVICE_HEADER = ["trial", "target", "note", "p50 [ms], batch 1, 1 client", "best [req/s], batch 1", "clients",
                  "best batch", "p50 [ms], best batch, 1 client", "best [samples/s], best batch", "clients", "errors"]
SERVICE_TEXT = ("What each target gives as a service (the question SONIC answered for CMS): at batch 1, the median "
                "latency of one client alone and the best throughput over the numbers of clients run; then at the "
                "best batch size (the one whose best throughput in samples/s is highest), its median latency of one "
                "client and its best throughput. Where one client was not run, the latency is at the fewest clients run.")


def service_point(runs: list[dict]) -> dict:
    """One target's service numbers from its runs: at batch 1 (p50 at the fewest clients, best requests/s
    and at how many clients), and at the best batch size (highest best samples/s; the smaller batch on a
    tie) the same in samples/s. Runs without a successful request count for nothing; None where none."""
    measured = [r for r in runs if r.get("ok", 0) > 0]

    def at_batch(batch: int) -> dict:
        mine = [r for r in measured if r.get("batch_size", 1) == batch]
        fewest = min((r for r in mine if r.get("p50_ms") is not None), key=lambda r: r["concurrency"], default=None)
        best = max(mine, key=lambda r: (samples_per_second(r), -r["concurrency"]))
        return {"batch_size": batch, "p50_ms": fewest and fewest["p50_ms"], "p50_clients": fewest and fewest["concurrency"],
                "best_rps": best["throughput_rps"], "best_samples_per_s": samples_per_second(best),
                "best_clients": best["concurrency"]}

    batches = sorted({r.get("batch_size", 1) for r in measured})
    per_batch = [at_batch(b) for b in batches]
    best = max(per_batch, key=lambda p: (p["best_samples_per_s"], -p["batch_size"]), default=None)
    return {"batch_1": next((p for p in per_batch if p["batch_size"] == 1), None), "best_batch": best,
            "errors": sum(sum(r.get("errors", {}).values()) for r in runs)}


def _p50_cell(point: dict) -> str:
    if point["p50_ms"] is None:
        return "—"
    clients = point["p50_clients"]
    return _fmt(float(point["p50_ms"]), 3) + ("" if clients == 1 else f" ({clients} clients)")


def service_rows(summaries: list[dict]) -> list[list[str]]:
    """The service table: one row per trial and target (and protocol and mode where runs differ in them);
    a target that was not ready shows its status and reason."""
    def row(trial, label, note, runs):
        point = service_point(runs)
        one, best = point["batch_1"], point["best_batch"]
        return [[trial, label, note,
                 *((_p50_cell(one), _fmt(float(one["best_rps"]), 1), str(one["best_clients"])) if one else ["—"] * 3),
                 *((str(best["batch_size"]), _p50_cell(best), _fmt(float(best["best_samples_per_s"]), 1),
                    str(best["best_clients"])) if best else ["—"] * 4),
                 str(point["errors"])]]
    return _per_target(summaries, row)


# ------------------------------------------------------------------ the document: blocks and inline text


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Strong:
    text: str


# Inline text: a plain string, or a tuple of plain strings, Code and Strong spans.
Inline = str | tuple


@dataclass(frozen=True)
class Heading:
    text: Inline
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: Inline


@dataclass(frozen=True)
class Bullets:
    items: tuple


@dataclass(frozen=True)
class Table:
    header: tuple
    rows: tuple


@dataclass(frozen=True)
class Image:
    """A plot, its path relative to the report; data: the CSV of its numbers, where it has one."""
    alt: str
    src: str
    data: str | None = None


Block = Heading | Paragraph | Bullets | Table | Image


def _spans(text: Inline) -> tuple:
    return (text,) if isinstance(text, str) else text


def _table(header: list[str], rows: list[list[str]]) -> Table:
    return Table(tuple(header), tuple(tuple(row) for row in rows))


BENCH_PLOTS = (("latency", "latency"), ("throughput", "throughput"), ("latency_hist", "latency histogram"))


def _plots(s: dict) -> list[Image]:
    """A trial's plots: training and profiling where its stages ran, the benchmark's where it has runs."""
    stages = s.get("stages", STAGES)
    images = [Image(f"{s['name']} {plot}", f"{s['name']}/{stage}/{plot}.png")
              for stage, plot in (("train", "training"), ("convert", "profiling")) if stage in stages]
    if "bench" in stages and (s.get("benchmark") or {}).get("runs"):
        images += [Image(f"{s['name']} {alt}", f"{s['name']}/bench/{plot}.png", f"{s['name']}/bench/{plot}.csv")
                   for plot, alt in BENCH_PLOTS]
    return images


LIVE_METRICS = Path("prometheus") / "prometheus.png"  # the run's Prometheus view (fpgaflow.prometheus), when it ran


def document(name: str, summaries: list[dict], facts: dict, live_metrics: bool = False) -> list[Block]:
    """The experiment's report, built once: the accuracy, the FPGA estimate, the sweep's front, the service
    table and every benchmark run, notes on failed trials, the plots, and the Prometheus view of the run
    when a local Prometheus scraped it (``live_metrics``)."""
    blocks: list[Block] = [Heading(("Experiment ", Code(name)), 1)]
    about: list[Inline] = [f"{k}: {v}" for k, v in facts.items()]
    about += [("data: ", Strong(name), f", {source}") for name, source in data_sources(summaries)]
    if about:
        blocks.append(Bullets(tuple(about)))
    blocks += [Heading("Accuracy"), _table(ACCURACY_HEADER, accuracy_rows(summaries))]
    retrained = retrain_rows(summaries)
    if retrained:
        blocks += [Heading("Before and after retraining the head on the firmware's featurizer outputs"),
                   Paragraph(RETRAIN_TEXT), _table(RETRAIN_HEADER, retrained)]
    blocks += [Heading("FPGA resources and latency (estimated without vendor tools; docs/estimates.md says how)"),
               _table(ESTIMATE_HEADER, estimate_rows(summaries))]
    estimate_notes: list[Inline] = [(f"{s['name']}: reuse factor {c['asked']} of ", Code(c["layer"]), f" ({c['shape'][0]}x{c['shape'][1]}) is "
                    f"not valid by hls4ml's rule; {c['used']} was used")
                   for s in summaries for c in s.get("reuse_factor_corrections", [])]
    estimate_notes += estimate_caveats(summaries)
    if estimate_notes:
        blocks.append(Bullets(tuple(estimate_notes)))
    points = sweep_points(summaries)
    if len(points) > 1:
        blocks += [Heading("Sweep: accuracy against DSPs and latency (Pareto front: no trial is cheaper and as accurate)"),
                   _table(PARETO_HEADER, pareto_rows(points)), Image("Pareto front", "pareto.png", "pareto.csv")]
    distance = network_note(summaries)
    blocks += [Heading("Latency and throughput (SONIC-style: N clients, each sending requests one after another)"),
               Paragraph(SERVICE_TEXT), *([Paragraph(distance)] if distance else []), _table(SERVICE_HEADER, service_rows(summaries)),
               Paragraph("Every run:"), _table(LATENCY_HEADER, latency_rows(summaries)), Paragraph(FOOTNOTE)]
    notes: list[Inline] = []
    for s in summaries:
        if s["phase"] == "Failed":
            notes.append((Strong(f"{s['name']} failed"), " in ", Code(str(s["stage"])), f" ({s['reason']}): {s['message']}"))
        elif s.get("note"):
            notes.append(f"{s['name']}: {s['note']}")
    if notes:
        blocks.append(Bullets(tuple(notes)))
    blocks += [Heading("Plots"), *(image for s in summaries for image in _plots(s))]
    if live_metrics:
        blocks += [Heading("The run as Prometheus saw it"),
                   Paragraph("The dashboard's panels over the whole run, queried from the local Prometheus that scraped "
                             "the trainer and the servers (every panel's series: prometheus/panels.json)."),
                   Image("Prometheus view of the run", str(LIVE_METRICS), str(LIVE_METRICS.with_suffix(".csv")))]
    return blocks


# ------------------------------------------------------------------ renderers


def _md_text(text: str) -> str:
    """Plain text in markdown: a "<" escaped, lest a renderer take "<none>" for an HTML tag and drop it."""
    return text.replace("<", "\\<")


def _md_inline(text: Inline) -> str:
    return "".join(f"`{span.text}`" if isinstance(span, Code) else f"**{_md_text(span.text)}**" if isinstance(span, Strong)
                   else _md_text(span) for span in _spans(text))


def _md_cell(cell: str) -> str:
    return _md_text(cell).replace("|", "\\|").replace("\n", " ")


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(blocks: list[Block]) -> str:
    """report.md: GitHub-flavoured markdown, the tables as pipe tables, the plots as relative image links."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + _md_inline(block.text))
        elif isinstance(block, Paragraph):
            out.append(_md_inline(block.text))
        elif isinstance(block, Bullets):
            out.append("\n".join("- " + _md_inline(item) for item in block.items))
        elif isinstance(block, Table):
            out.append(_md_table(block.header, block.rows))
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.src})" + (f" ([data]({block.data}))" if block.data else ""))
    return "\n\n".join(out) + "\n"


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1b1f23; line-height: 1.45; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
code { background: #f3f4f6; padding: 0 .25em; border-radius: 3px; }
.table { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 90%; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #d0d7de; }
figcaption { font-size: 85%; color: #57606a; }
"""
_NUMBER = re.compile(r"^[-+]?\d[\d,.]*(e[-+]?\d+)?( \(\d+ clients\))?$|^—$")


def _html_inline(text: Inline) -> str:
    out = []
    for span in _spans(text):
        if isinstance(span, Code):
            out.append(f"<code>{html.escape(span.text)}</code>")
        elif isinstance(span, Strong):
            out.append(f"<strong>{html.escape(span.text)}</strong>")
        else:
            out.append(html.escape(span))
    return "".join(out)


def _html_table(block: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
    body = "\n".join("<tr>" + "".join(f'<td class="num">{html.escape(c)}</td>' if _NUMBER.match(c) else f"<td>{html.escape(c)}</td>"
                                      for c in row) + "</tr>" for row in block.rows)
    return f'<div class="table"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


def render_html(blocks: list[Block], title: str) -> str:
    """report.html: one self-contained page (inline CSS, no scripts, every text escaped), the tables as
    <table>, the plots as <img> with paths relative to the experiment's folder."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_html_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_html_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>\n" + "\n".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "\n</ul>")
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, Image):
            src, alt = html.escape(block.src), html.escape(block.alt)
            data = f' · <a href="{html.escape(block.data)}">data (CSV)</a>' if block.data else ""
            out.append(f'<figure><a href="{src}"><img src="{src}" alt="{alt}"></a><figcaption>{alt}{data}</figcaption></figure>')
    body = "\n".join(out)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def markdown(name: str, summaries: list[dict], facts: dict) -> str:
    return render_markdown(document(name, summaries, facts))


def html_report(name: str, summaries: list[dict], facts: dict) -> str:
    return render_html(document(name, summaries, facts), title=f"fpgaflow experiment {name}")


# ------------------------------------------------------------------ files: the report and its plots


def histogram_selection(runs: list[dict], keys: set[str]) -> dict[str, str]:
    """Which latencies the histogram shows: per target (and network, where several were measured), batch 1
    (else its smallest batch) at the most clients run there; {label: latencies.npz key}. Keys are
    f"{target}_b{batch}_c{clients}" (f"{target}@{network}_b{batch}_c{clients}" where several networks were
    measured), or f"{target}_c{clients}" in runs from before batch scans."""
    several_networks = len({run_network(r) for r in runs}) > 1
    chosen = {}
    for target, network in dict.fromkeys((r["target"], run_network(r)) for r in runs):
        mine = [r for r in runs if r["target"] == target and run_network(r) == network and r.get("ok", 0) > 0]
        if not mine:
            continue
        batches = {r.get("batch_size", 1) for r in mine}
        batch = 1 if 1 in batches else min(batches)
        clients = max(r["concurrency"] for r in mine if r.get("batch_size", 1) == batch)
        name = f"{target}@{network}" if several_networks else target
        key = next((k for k in (f"{name}_b{batch}_c{clients}", f"{name}_c{clients}") if k in keys), None)
        if key is not None:
            where = f", {network}" if several_networks else ""
            chosen[f"{target}{where}, batch {batch}, {clients} client{'s' * (clients != 1)}"] = key
    return chosen


def write_bench_plots(bench_dir: Path, runs: list[dict], title: str) -> list[Path]:
    """latency.png, throughput.png and latency_hist.png (each with its .csv) of one trial's benchmark."""
    import numpy as np

    from fpgaflow.plots import plot_benchmark, plot_latency_hist

    if not runs:
        return []
    plot_benchmark(runs, bench_dir, title)
    written = [bench_dir / "latency.png", bench_dir / "throughput.png"]
    npz = bench_dir / "latencies.npz"
    if npz.exists():
        with np.load(npz) as latencies:
            chosen = histogram_selection(runs, set(latencies.files))
            samples = {label: latencies[key] for label, key in chosen.items()}
        plot_latency_hist(samples, bench_dir / "latency_hist.png", title)
        written.append(bench_dir / "latency_hist.png")
    return written


def write_report(folder: Path, name: str, summaries: list[dict], facts: dict) -> Path:
    """Write an experiment's report.md and report.html and (re)draw its plots, each with its CSV: every
    benchmarked trial's latency, throughput and latency histogram, and a sweep's Pareto front. Reads
    only the trial folders. Returns report.md's path."""
    from fpgaflow.plots import plot_pareto

    for s in summaries:
        runs = (s.get("benchmark") or {}).get("runs") or []
        batches = sorted({r.get("batch_size", 1) for r in runs})
        title = f"{name} / {s['name']}" + (f", batch {batches[0]}" if len(batches) == 1 else "")
        write_bench_plots(folder / s["name"] / "bench", runs, title)
    points = sweep_points(summaries)
    if len(points) > 1:
        plot_pareto(points, folder / "pareto.png", f"{name}: accuracy against cost")
    blocks = document(name, summaries, facts, live_metrics=(folder / LIVE_METRICS).is_file())
    (folder / "report.html").write_text(render_html(blocks, title=f"fpgaflow experiment {name}"))
    path = folder / "report.md"
    path.write_text(render_markdown(blocks))
    return path


def regenerate(store, name: str) -> tuple[Path, list[dict]]:
    """`fpgaflow report NAME`: rewrite an experiment's report and plots from its folder in the run store
    (``store``: a RunStore); no server is started and no model loaded. Returns report.md's path and the
    summaries."""
    folder = store.experiment_dir(name)
    record = store.experiment(name)
    if not (folder / "experiment.json").exists():
        where = f"{store.home}" if record is None else f"{folder} (the index lists it, but its folder is gone)"
        raise NotFound(f"no experiment named {name!r} in {where}")
    summaries = stored_summaries(folder, record["trials"] if record else None)
    return write_report(folder, name, summaries, experiment_facts(folder)), summaries


# ------------------------------------------------------------------ the terminal


def print_report(console, name: str, summaries: list[dict], report_path: Path | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table as RichTable

    for title, header, rows in (
        (f"{name}: accuracy on the test set", ACCURACY_HEADER, accuracy_rows(summaries)),
        (f"{name}: served accuracy before and after retraining the head on the firmware's featurizer outputs",
         RETRAIN_HEADER, retrain_rows(summaries)),
        (f"{name}: FPGA resources and latency, estimated", ESTIMATE_HEADER, estimate_rows(summaries)),
        (f"{name}: each target as a service (batch 1, and the best batch size)", SERVICE_HEADER, service_rows(summaries)),
        (f"{name}: latency and throughput per target, every run", LATENCY_HEADER, latency_rows(summaries)),
    ):
        if header is RETRAIN_HEADER and not rows:
            continue
        table = RichTable(title=escape(title), title_justify="left")
        for column in header:
            table.add_column(escape(column), overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    console.print(escape(FOOTNOTE))
    distance = network_note(summaries)
    if distance:
        console.print(escape(distance))
    for name, source in data_sources(summaries):
        console.print(escape(f"data: {name}, {source}"))
    for caveat in estimate_caveats(summaries):
        console.print(escape(f"estimate {caveat}"))
    for s in summaries:
        if s["phase"] == "Failed":
            line = f"{s['name']} failed in {s['stage']} ({s['reason']}): {s['message']}"
            console.print(f"[red]{escape(line)}[/red]")
        elif s.get("note"):
            console.print(escape(f"{s['name']}: {s['note']}"))
    if report_path:
        html_path = report_path.with_suffix(".html")
        console.print(escape(f"report: {report_path}" + (f" and {html_path.name}" if html_path.exists() else "")))
