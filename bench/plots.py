"""PNG plots (matplotlib, the optional `bench` extra): containers/s against concurrency, and
latency percentiles against concurrency. Small files: they are committed with the results."""

from __future__ import annotations

import os

from bench.stats import median, percentile
from bench.throughput import Results

MISSING = ("Plots skipped: matplotlib is not installed (`pip install -e '.[bench]'` "
           "installs it).")


def draw(results: Results, out_dir: str) -> list[str] | str:
    """The PNGs' file names, or why there are none."""
    try:
        import matplotlib
    except ImportError:
        return MISSING
    if not results:
        return "Plots skipped: no throughput was measured."
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=80)
    for name, levels in results.items():
        xs = sorted(levels)
        ax.plot(xs, [median([b.rate for b in levels[c]]) for c in xs], marker="o", label=name)
    ax.set_yscale("log")  # equal ratios, equal distances
    _axes(ax, xs, "containers/s (median)", "Throughput: create, start, wait, delete")
    names.append(_save(fig, out_dir, "throughput.png"))

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=80)
    for i, (name, levels) in enumerate(results.items()):
        xs = sorted(levels)
        pooled = [[x * 1000 for b in levels[c] for x in b.latencies] for c in xs]
        color = f"C{i}"
        ax.plot(xs, [percentile(p, 50) for p in pooled], marker="o", color=color,
                label=f"{name} p50")
        ax.plot(xs, [percentile(p, 99) for p in pooled], marker="x", color=color,
                linestyle="--", label=f"{name} p99")
    ax.set_yscale("log")
    _axes(ax, xs, "latency per container, ms", "Latency percentiles (create to deleted)")
    names.append(_save(fig, out_dir, "latency.png"))
    plt.close("all")
    return names


def _axes(ax, levels: list[int], ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrency")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _save(fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name))
    return name
