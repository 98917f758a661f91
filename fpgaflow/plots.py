"""PNG plots beside the numbers. matplotlib is imported lazily, with the headless Agg back end."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(history: dict[str, list[float]], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history["loss"]) + 1)
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
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
