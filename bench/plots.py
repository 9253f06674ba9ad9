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


def _lines(rows: list[dict], x_key: str, y_of, path: Path, title: str, xlabel: str,
           ylabel: str, log_sizes: bool = False) -> Path:
    """One line per algorithm (baselines dashed) of y_of(row) against row[x_key]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for algo in dict.fromkeys(r["algo"] for r in rows):
        mine = [r for r in rows if r["algo"] == algo]
        ax.plot([r[x_key] for r in mine], [y_of(r) for r in mine],
                "--" if algo in ("mpi", "gloo") else "-", marker="o", label=algo)
    xs = sorted({r[x_key] for r in rows})
    if log_sizes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [format_size(x) for x in xs], rotation=45)
    else:
        ax.set_xticks(xs)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def busbw_vs_size(rows: list[dict], path: Path, title: str) -> Path:
    return _lines(rows, "bytes", lambda r: r["busbw"], path, title, "message size (bytes)",
                  "bus bandwidth (GB/s)", log_sizes=True)


def d2l_bars(entries: list[dict], path: Path, title: str) -> Path:
    """Left: measured sync time per strategy. Right: time relative to blocked, measured here
    and published by d2l (the part that should carry over between machines)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    xs = list(range(len(entries)))
    left.bar(xs, [e["measured_ms"] for e in entries], color="tab:blue")
    for x, e in zip(xs, entries):
        left.annotate(f"{e['measured_ms']:.1f}", (x, e["measured_ms"]), ha="center",
                      va="bottom", fontsize=8)
    left.set_xticks(xs, [e["label"] for e in entries], rotation=25)
    left.set_ylabel("sync time (ms), measured here")
    left.set_title("measured")
    same = [e for e in entries if e.get("d2l_x_split")]
    width = 0.4
    rx = list(range(len(same)))
    right.bar([x - width / 2 for x in rx], [e["measured_x_blocked"] for e in same], width,
              label="measured here")
    right.bar([x + width / 2 for x in rx], [e["d2l_x_split"] for e in same], width,
              label="d2l (4 GPUs, PCIe)", alpha=0.8)
    right.set_xticks(rx, [e["label"] for e in same], rotation=25)
    right.set_ylabel("time relative to blocked (split)")
    right.set_title("relative to blocked")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_ranks(rows: list[dict], path: Path, title: str) -> Path:
    return _lines(rows, "ranks", lambda r: r["time_us"] / 1e3, path, title, "ranks",
                  "sync time (ms)")


def model_vs_measured(points: list[dict], path: Path, title: str) -> Path:
    """Per algorithm and rank count: the model as a line, the measurements as points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    series = dict.fromkeys((p["algo"], p["ranks"]) for p in points)
    for i, (algo, ranks) in enumerate(series):
        mine = sorted((p for p in points if p["algo"] == algo and p["ranks"] == ranks),
                      key=lambda p: p["bytes"])
        color = f"C{i % 10}"
        xs = [p["bytes"] for p in mine]
        ax.plot(xs, [p["seconds"] * 1e3 for p in mine], "-", color=color,
                label=f"{algo}, {ranks} ranks")
        ax.plot(xs, [p["measured_seconds"] * 1e3 for p in mine], "o", color=color)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="message size (bytes)", ylabel="sync time (ms)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
