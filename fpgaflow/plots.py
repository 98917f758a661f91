"""PNG plots beside the numbers. matplotlib is imported lazily, with the headless Agg back end."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(rows: list[dict], path: Path, title: str) -> None:
    """training.png from history.json's rows: loss and accuracy (train, validation), the validation AUC
    of each class, and the gradient norm with the sparsity; a dotted line where fixed-point training began."""
    plt = _pyplot()
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


def plot_benchmark(rows: list[dict], outdir: Path, title: str) -> None:
    """latency.png (p50 with p99 whiskers) and throughput.png against the number of clients, per target."""
    plt = _pyplot()
    targets = sorted({r["target"] for r in rows})
    for name, ylabel in (
        ("latency", "latency per request [ms] (p50, bar to p99)"),
        ("throughput", "throughput [requests/s]"),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for target in targets:
            pts = sorted((r for r in rows if r["target"] == target), key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in pts]
            if name == "latency":
                p50 = [r["p50_ms"] for r in pts]
                p99 = [r["p99_ms"] for r in pts]
                ax.errorbar(xs, p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99, strict=True)]],
                            marker="o", capsize=3, label=target)
                ax.set_yscale("log")
            else:
                ax.plot(xs, [r["throughput_rps"] for r in pts], marker="o", label=target)
        ax.set_xscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        fig.savefig(outdir / f"{name}.png", dpi=110)
        plt.close(fig)


def plot_pareto(points: list[dict], path: Path, title: str) -> None:
    """pareto.png: emulated accuracy against DSPs and against latency, one dot a trial, the front joined."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, (key, label) in zip(axes, (("dsp", "DSPs (estimated)"), ("latency_ns", "latency [ns] (estimated)")), strict=True):
        ax.scatter([p[key] for p in points], [p["accuracy"] for p in points], color="tab:gray", label="trial")
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
