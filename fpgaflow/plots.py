"""PNG plots, each with the CSV of its numbers beside it (same base name). matplotlib is imported lazily,
with the headless Agg back end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fpgaflow.spec import modelled_distance

if TYPE_CHECKING:
    import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(rows: list[dict], path: Path, title: str) -> None:
    """training.png from history.json's rows: loss and accuracy (train, validation), the validation AUC
    of each class, and the gradient norm with the sparsity; a dotted line where fixed-point training began."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    epochs = [row["epoch"] for row in rows]
    qat = next((row["epoch"] for row in rows if row.get("phase") == "qat"), None)

    def series(key):
        return [row.get(key, float("nan")) for row in rows]

    for key, ax in (("loss", axes[0, 0]), ("accuracy", axes[0, 1])):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if any(f"{prefix}{key}" in row for row in rows):
                ax.plot(epochs, series(f"{prefix}{key}"), marker="o", label=label)
        ax.set_ylabel(key)
    ax = axes[1, 0]
    for name in (rows[-1].get("val_auc") or {}) if rows else ():
        ax.plot(epochs, [(row.get("val_auc") or {}).get(name) or float("nan") for row in rows], marker=".", label=name)
    ax.set_ylabel("validation AUC (one vs rest)")
    ax = axes[1, 1]
    if any("gradient_norm" in row for row in rows):
        ax.plot(epochs, series("gradient_norm"), marker=".", color="tab:red", label="gradient norm")
        ax.set_yscale("log")
        twin = ax.twinx()
        twin.plot(epochs, series("sparsity"), marker=".", color="tab:gray", label="sparsity")
        twin.set_ylabel("sparsity (zero weights)")
        twin.set_ylim(-0.02, 1.02)
        twin.legend(loc="upper right")
    ax.set_ylabel("gradient norm (probe batch)")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if qat is not None:
            ax.axvline(qat - 0.5, color="k", linestyle=":", linewidth=1, label="fixed point (QAT) from here")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left" if ax is axes[1, 1] else "best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """The numbers behind a plot, beside it: same base name, .csv."""
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run_variant(row: dict) -> str:
    """How a benchmark run called its server, where the row says: "protocol, mode" (or "")."""
    return ", ".join(str(row[key]) for key in ("protocol", "mode") if row.get(key))


def run_network(row: dict) -> str:
    """Where a benchmark run's clients sat, where the row says: its network's name (or "")."""
    return str(row.get("network") or "")


def network_label(row: dict) -> str:
    """A run's network with what it models: "on-prem (direct)", "remote (50 ms RTT, modelled)"."""
    rtt, bandwidth = float(row.get("rtt_ms") or 0), row.get("bandwidth_mbps")
    parts = ([f"{rtt:g} ms RTT"] if rtt else []) + ([f"{float(bandwidth):g} Mbit/s"] if bandwidth is not None else [])
    return f"{run_network(row)} ({', '.join([*parts, 'modelled']) if parts else 'direct'})"


def modelled_networks(rows: list[dict]) -> list[str]:
    """The labels of the networks whose distance runs modelled (not direct), each once, in run order."""
    return list(dict.fromkeys(network_label(r) for r in rows if modelled_distance(r.get("rtt_ms"), r.get("bandwidth_mbps"))))


def samples_per_second(row: dict) -> float:
    return row.get("throughput_samples_per_s", row["throughput_rps"] * row.get("batch_size", 1))


def benchmark_series(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """The lines of the benchmark plots: one per target (and network, protocol and mode where runs differ in
    them), and per batch size where several ran; each line's runs ordered by the number of clients."""
    several_batches = len({r.get("batch_size", 1) for r in rows}) > 1
    several_variants = len({run_variant(r) for r in rows}) > 1
    several_networks = len({run_network(r) for r in rows}) > 1
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], run_network(r) if several_networks else "", run_variant(r) if several_variants else "",
                           r.get("batch_size", 1)), []).append(r)
    series = []
    for (target, network, variant, batch), runs in sorted(groups.items()):
        label = (target + (f", {network}" if network else "") + (f" ({variant})" if variant else "")
                 + (f", batch {batch}" if several_batches else ""))
        series.append((label, sorted(runs, key=lambda r: r["concurrency"])))
    return series


BENCH_CSV_KEYS = ("target", "network", "protocol", "mode", "batch_size", "concurrency")


def plot_benchmark(rows: list[dict], outdir: Path, title: str) -> None:
    """latency.png (p50 with p99 whiskers) and throughput.png against the number of clients: one line per
    target, and per batch size where several ran (then in samples/s); latency.csv and throughput.csv hold
    the plotted numbers."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    series = benchmark_series(rows)
    several_batches = len({r.get("batch_size", 1) for r in rows}) > 1
    rate_key, rate_label = (("throughput_samples_per_s", "throughput [samples/s]") if several_batches
                            else ("throughput_rps", "throughput [requests/s]"))
    for name, ylabel, columns in (
        ("latency", "latency per request [ms] (p50, bar to p99)", ("p50_ms", "p90_ms", "p99_ms", "mean_ms")),
        ("throughput", rate_label, ("throughput_rps", "throughput_samples_per_s")),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        table = []
        for label, runs in series:
            if name == "latency":
                runs = [r for r in runs if r.get("p50_ms") is not None]  # a run with errors only has no latency
                if not runs:
                    continue
                p50 = [r["p50_ms"] for r in runs]
                p99 = [r.get("p99_ms", r["p50_ms"]) for r in runs]
                ax.errorbar([r["concurrency"] for r in runs], p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99, strict=True)]],
                            marker="o", capsize=3, label=label)
                ax.set_yscale("log")
            else:
                rates = [samples_per_second(r) if rate_key == "throughput_samples_per_s" else r["throughput_rps"] for r in runs]
                ax.plot([r["concurrency"] for r in runs], rates, marker="o", label=label)
            table += [[label, *(r.get(k, 1 if k == "batch_size" else "") for k in BENCH_CSV_KEYS),
                       *((samples_per_second(r) if k == "throughput_samples_per_s" else r.get(k, "")) for k in columns)]
                      for r in runs]
        ax.set_xscale("log")
        clients = sorted({r["concurrency"] for r in rows})
        ax.set_xticks(clients, [str(c) for c in clients])  # the numbers of clients run, as plain numbers
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if table:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / f"{name}.png", dpi=110)
        plt.close(fig)
        write_csv(outdir / f"{name}.csv", ["series", *BENCH_CSV_KEYS, *columns], table)


def latency_histogram(samples: dict[str, np.ndarray], bins: int = 60) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Log-spaced bin edges shared by every series (from the smallest latency to the largest) and each
    series' counts: every latency falls in exactly one bin."""
    import numpy as np

    values = {label: np.asarray(v, dtype=float).ravel() for label, v in samples.items()}
    present = [v for v in values.values() if v.size]
    if not present:
        return np.zeros(0), {label: np.zeros(0, dtype=np.int64) for label in values}
    lo = max(min(float(v.min()) for v in present), 1e-6)  # a latency of 0 (clock resolution) joins the first bin
    hi = max(max(float(v.max()) for v in present), lo)
    if hi < lo * 1.01:  # all (nearly) equal: a narrow band around them
        lo, hi = lo / 1.05, hi * 1.05
    edges = np.geomspace(lo, hi, bins + 1)
    return edges, {label: np.histogram(np.clip(v, lo, hi), edges)[0] for label, v in values.items()}


def plot_latency_hist(samples: dict[str, np.ndarray], path: Path, title: str) -> None:
    """latency_hist.png: the per-request latencies of each series (a target at one batch size and number
    of clients) on log-spaced bins, as the fraction of its requests, overlaid; the .csv beside it holds
    the bin edges and counts."""
    import numpy as np

    plt = pyplot()
    edges, counts = latency_histogram(samples)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    table = []
    for label, n in counts.items():
        total = int(n.sum())
        if total:
            ax.stairs(n / total, edges, label=f"{label} ({total} requests)")
        table += [[label, f"{edges[i]:.6g}", f"{edges[i + 1]:.6g}", int(n[i]), total] for i in range(len(n))]
    ax.set_xscale("log")
    ax.set_xlabel("latency per request [ms] (log-spaced bins)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if any(int(np.sum(n)) for n in counts.values()):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    write_csv(path.with_suffix(".csv"), ["series", "bin_low_ms", "bin_high_ms", "count", "requests"], table)


def plot_pareto(points: list[dict], path: Path, title: str) -> None:
    """pareto.png: emulated accuracy against DSPs and against latency, one dot a trial with the estimate's
    uncertainty as a horizontal bar, the front joined; pareto.csv beside it holds the points."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, (key, label) in zip(axes, (("dsp", "DSPs (estimated)"), ("latency_ns", "latency [ns] (estimated)")), strict=True):
        ax.errorbar([p[key] for p in points], [p["accuracy"] for p in points],
                    xerr=[p[key] * p.get(f"{key}_error", 0.0) for p in points], fmt="o", color="tab:gray",
                    ecolor="tab:gray", alpha=0.6, capsize=3, label="trial (± the estimate's held-out error)")
        front = sorted((p for p in points if p[f"front_{key}"]), key=lambda p: p[key])
        ax.plot([p[key] for p in front], [p["accuracy"] for p in front], marker="o", color="tab:red", label="Pareto front")
        names: dict[tuple, list[str]] = {}
        for p in points:  # trials on the same spot share one label
            names.setdefault((p[key], p["accuracy"]), []).append(p["name"])
        for spot, trials in names.items():
            ax.annotate(", ".join(trials), spot, textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("emulated accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    write_csv(path.with_suffix(".csv"), ["trial", "parameters", "emulated_accuracy", "dsp", "latency_ns", "front_dsp", "front_latency_ns"],
              [[p["name"], ";".join(f"{k}={v}" for k, v in p["parameters"].items()), p["accuracy"], p["dsp"], p["latency_ns"],
                p["front_dsp"], p["front_latency_ns"]] for p in points])
