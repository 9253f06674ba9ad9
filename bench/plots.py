"""PNG plots (matplotlib, Agg): busbw vs size per algorithm, the d2l-style bar chart, and
sync time vs rank count (measured) or node count (modelled). Plotting is optional (the
`plot` extra): without matplotlib the results are still written and the caller is told
which plots were skipped. `Painter` draws in a second process, for commands that are
otherwise quicker than matplotlib's import."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from .units import format_size


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


class Painter:
    """Plots drawn by a second Python process that starts importing matplotlib as soon as
    the Painter is made, so the caller computes meanwhile (on another core): for the
    modelled scaling sweep, matplotlib's import is most of the wall time. draw() queues a
    plot (a function of this module, JSON-able arguments), finish() draws them all and
    returns their paths."""

    def __init__(self):
        here = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
        self.jobs: list[dict] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from bench.plots import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": path})

    def draw(self, function, *args) -> None:
        self.jobs.append({"function": function.__name__, "args": [str(a) if isinstance(a, Path)
                                                                   else a for a in args]})

    def finish(self) -> list[str]:
        out, err = self.process.communicate(json.dumps(self.jobs))
        if self.process.returncode:
            last = (err.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"the plotting process failed: {last}")
        return json.loads(out)

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def _serve() -> None:
    """The Painter's process: import matplotlib first, then draw what arrives on stdin."""
    _pyplot()
    jobs = json.loads(sys.stdin.read())
    print(json.dumps([str(globals()[job["function"]](*job["args"])) for job in jobs]))


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


def time_vs_nodes(series: list[dict], path: Path, title: str) -> Path:
    """Modelled sync time against node count, log-log, one line per strategy and one panel
    per message size. Points of zero time (one rank: nothing to sum) have no place on a
    log scale and are left out."""
    plt = _pyplot()
    sizes = list(dict.fromkeys(s["bytes"] for s in series))
    fig, axes = plt.subplots(1, len(sizes), figsize=(8 * len(sizes) ** 0.5 + 1, 5),
                             squeeze=False)
    for ax, nbytes in zip(axes[0], sizes):
        for s in (s for s in series if s["bytes"] == nbytes):
            points = [(n, t) for n, t in zip(s["nodes"], s["seconds"]) if t > 0]
            ax.plot([n for n, _ in points], [t * 1e3 for _, t in points], marker="o",
                    markersize=3, label=s["algo"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="nodes", ylabel="sync time (ms)", title=f"{format_size(nbytes)} allreduce")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.11, top=0.87, wspace=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_size(series: list[dict], nodes: int, path: Path, title: str) -> Path:
    """Modelled sync time against message size at one node count, log-log, one line per
    strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for algo in dict.fromkeys(s["algo"] for s in series):
        points = sorted((s["bytes"], t) for s in series if s["algo"] == algo
                        for n, t in zip(s["nodes"], s["seconds"]) if n == nodes and t > 0)
        ax.plot([b for b, _ in points], [t * 1e3 for _, t in points], marker="o", label=algo)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="message size (bytes)", ylabel="sync time (ms)",
           title=f"{nodes} nodes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.11, top=0.87)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
