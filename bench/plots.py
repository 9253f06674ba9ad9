"""PNG plots (matplotlib, Agg): busbw vs size per algorithm, the d2l-style bar chart, and
sync time vs rank count. Plotting is optional (the `plot` extra): without matplotlib the
results are still written and the caller is told which plots were skipped."""
from __future__ import annotations

from pathlib import Path

from .units import format_size


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def busbw_vs_size(rows: list[dict], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for algo in dict.fromkeys(r["algo"] for r in rows):
        mine = [r for r in rows if r["algo"] == algo]
        style = "--" if algo in ("mpi", "gloo") else "-"
        ax.plot([r["bytes"] for r in mine], [r["busbw"] for r in mine], style, marker="o",
                label=algo)
    sizes = sorted({r["bytes"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [format_size(s) for s in sizes], rotation=45)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def d2l_bars(entries: list[dict], path: Path, title: str) -> Path:
    """entries: {label, measured_ms, d2l_ms (or None)}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    labels = [e["label"] for e in entries]
    xs = range(len(entries))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [e["measured_ms"] for e in entries], width,
           label="measured here")
    ax.bar([x + width / 2 for x in xs], [e["d2l_ms"] or 0 for e in entries], width,
           label="d2l published", alpha=0.7)
    for x, e in zip(xs, entries):
        ax.annotate(f"{e['measured_ms']:.1f}", (x - width / 2, e["measured_ms"]),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels, rotation=20)
    ax.set_ylabel("sync time (ms)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_ranks(rows: list[dict], path: Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for algo in dict.fromkeys(r["algo"] for r in rows):
        mine = [r for r in rows if r["algo"] == algo]
        style = "--" if algo in ("mpi", "gloo") else "-"
        ax.plot([r["ranks"] for r in mine], [r["time_us"] / 1e3 for r in mine], style,
                marker="o", label=algo)
    ax.set_xticks(sorted({r["ranks"] for r in rows}))
    ax.set_xlabel("ranks")
    ax.set_ylabel("sync time (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
