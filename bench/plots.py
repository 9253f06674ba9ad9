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


# One colour per strategy (the same in every plot of a run), one marker per rank count; a
# strategy drawn later is drawn thinner, so two that coincide both stay visible.
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#e7969c"]
BASELINE_COLOURS = {"mpi": "black", "gloo": "dimgray"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


def strategy_of(label: str) -> str:
    """The strategy behind a row's label: ring/TRANSPORT and ring* (shared buffers) are the
    ring measured another way, so they share its colour (ring[LAYOUT] and ps(4 servers) are
    variants of their own, with colours of their own)."""
    return label.split("/")[0].rstrip("*")


class Styles:
    """Colour per strategy and marker per rank count, handed out in first-seen order; the
    variants of one strategy (another transport, shared buffers) differ by line style."""

    def __init__(self):
        self.colours: dict[str, str] = {}
        self.labels: list[str] = []
        self.markers: dict[int, str] = {}

    def colour(self, algo: str) -> str:
        if algo not in self.labels:
            self.labels.append(algo)
        base = strategy_of(algo)
        if base not in self.colours:
            self.colours[base] = BASELINE_COLOURS.get(base) or COLOURS[
                sum(1 for a in self.colours if a not in BASELINE_COLOURS) % len(COLOURS)]
        return self.colours[base]

    @staticmethod
    def dashes(algo: str) -> str:
        """Baselines dashed; over MPI point-to-point dotted; on shared buffers dash-dot."""
        if strategy_of(algo) in BASELINE_COLOURS:
            return "--"
        return ":" if algo.rstrip("*").endswith("/mpi") else \
            "-." if algo.endswith("*") else "-"

    def marker(self, ranks: int) -> str:
        return self.markers.setdefault(ranks, MARKERS[len(self.markers) % len(MARKERS)])

    def shape(self, algo: str) -> str:
        """A marker per strategy, where one plot has one rank count (a sweep)."""
        self.colour(algo)
        return MARKERS[list(self.colours).index(strategy_of(algo)) % len(MARKERS)]

    def width(self, algo: str) -> float:
        """Thicker for strategies drawn first: a thinner line on top leaves both visible."""
        order = self.labels.index(algo) if algo in self.labels else len(self.labels)
        return max(1.0, 3.4 - 0.4 * order)


def _bars(rows: list[dict], scale: float):
    """Min-max error bars from the rows' min_us/max_us columns (None where absent)."""
    if not all(r.get("min_us") is not None and r.get("max_us") is not None for r in rows):
        return None
    low = [max(r["time_us"] - r["min_us"], 0) * scale for r in rows]
    high = [max(r["max_us"] - r["time_us"], 0) * scale for r in rows]
    return [low, high]


def _lines(rows: list[dict], x_key: str, y_of, path: Path, title: str, xlabel: str,
           ylabel: str, log_sizes: bool = False, log_y: bool = False, bars=None) -> Path:
    """One line per algorithm (baselines dashed) of y_of(row) against row[x_key], with
    min-max bars where `bars(rows)` gives them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    styles = Styles()
    for algo in dict.fromkeys(r["algo"] for r in rows):
        mine = [r for r in rows if r["algo"] == algo]
        colour = styles.colour(algo)
        ax.errorbar([r[x_key] for r in mine], [y_of(r) for r in mine],
                    yerr=bars(mine) if bars else None, color=colour, capsize=2,
                    linestyle=styles.dashes(algo),
                    linewidth=styles.width(algo), marker=styles.shape(algo),
                    markersize=4, label=algo)
    xs = sorted({r[x_key] for r in rows})
    if log_sizes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [format_size(x) for x in xs], rotation=45)
    else:
        ax.set_xticks(xs)
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def busbw_vs_size(rows: list[dict], path: Path, title: str) -> Path:
    """busbw per algorithm; the bars are the busbw of the slowest and fastest iteration."""
    def bars(mine):
        if not all(r.get("min_us") and r.get("max_us") for r in mine):
            return None
        return [[max(r["busbw"] - r["busbw"] * r["time_us"] / r["max_us"], 0) for r in mine],
                [max(r["busbw"] * r["time_us"] / r["min_us"] - r["busbw"], 0) for r in mine]]
    return _lines([r for r in rows if r["busbw"] > 0], "bytes", lambda r: r["busbw"], path,
                  title, "message size (bytes)", "bus bandwidth (GB/s, log)", log_sizes=True,
                  log_y=True, bars=bars)


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
                  "sync time (ms, median; bars: fastest and slowest iteration)",
                  bars=lambda mine: _bars(mine, 1e-3))


def model_vs_measured(points: list[dict], path: Path, title: str) -> Path:
    """Per algorithm (one colour) and rank count (one marker): the model as a line, the
    measurements as markers with min-max bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 6))
    styles = Styles()
    for algo, ranks in dict.fromkeys((p["algo"], p["ranks"]) for p in points):
        mine = sorted((p for p in points if p["algo"] == algo and p["ranks"] == ranks),
                      key=lambda p: p["bytes"])
        colour, marker = styles.colour(algo), styles.marker(ranks)
        xs = [p["bytes"] for p in mine]
        measured = [p["measured_seconds"] * 1e3 for p in mine]
        ax.plot(xs, [p["seconds"] * 1e3 for p in mine], "-", color=colour,
                linewidth=styles.width(algo) * 0.6, alpha=0.8)
        low = [m - p.get("min_seconds", p["measured_seconds"]) * 1e3
               for m, p in zip(measured, mine)]
        high = [p.get("max_seconds", p["measured_seconds"]) * 1e3 - m
                for m, p in zip(measured, mine)]
        ax.errorbar(xs, measured, yerr=[low, high], fmt=marker, color=colour, markersize=5,
                    markerfacecolor="none", capsize=2, linewidth=0.8)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, label=a) for a, c in styles.colours.items()] + \
        [Line2D([], [], color="gray", marker=m, linestyle="none", markerfacecolor="none",
                label=f"{r} ranks") for r, m in styles.markers.items()]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="message size (bytes)", ylabel="sync time (ms, log)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_nodes(series: list[dict], path: Path, title: str, marks=()) -> Path:
    """Modelled sync time against node count, log-log, one line per strategy (one colour
    each, thinner when drawn later so coinciding ones stay visible) and one panel per
    message size; `marks` (crossovers where the fastest changes) as dotted verticals. Points
    of zero time (one rank: nothing to sum) have no place on a log scale and are left out."""
    plt = _pyplot()
    sizes = list(dict.fromkeys(s["bytes"] for s in series))
    fig, axes = plt.subplots(1, len(sizes), figsize=(8 * len(sizes) ** 0.5 + 3, 5.5),
                             squeeze=False)
    styles = Styles()
    for ax, nbytes in zip(axes[0], sizes):
        for s in (s for s in series if s["bytes"] == nbytes):
            points = [(n, t) for n, t in zip(s["nodes"], s["seconds"]) if t > 0]
            ax.plot([n for n, _ in points], [t * 1e3 for _, t in points],
                    marker=styles.shape(s["algo"]), markersize=3, color=styles.colour(s["algo"]),
                    linewidth=styles.width(s["algo"]), label=s["algo"])
        for i, mark in enumerate(m for m in marks if m["bytes"] == nbytes):
            ax.axvline(mark["first"], color=styles.colour(mark["faster"]), linestyle=":",
                       linewidth=1.2)
            ax.annotate(f"{mark['faster']} fastest from {mark['first']}",
                        (mark["first"], 0.02 + 0.06 * i), xycoords=("data", "axes fraction"),
                        xytext=(3, 0), textcoords="offset points", fontsize=7,
                        color=styles.colour(mark["faster"]),
                        bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="nodes", ylabel="sync time (ms, log)",
               title=f"{format_size(nbytes)} allreduce (dotted: where the fastest changes)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.87, bottom=0.11, top=0.87, wspace=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_vs_size(series: list[dict], nodes: int, path: Path, title: str) -> Path:
    """Modelled sync time against message size at one node count, log-log, one line per
    strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = Styles()
    for algo in dict.fromkeys(s["algo"] for s in series):
        points = sorted((s["bytes"], t) for s in series if s["algo"] == algo
                        for n, t in zip(s["nodes"], s["seconds"]) if n == nodes and t > 0)
        ax.plot([b for b, _ in points], [t * 1e3 for _, t in points], marker=styles.shape(algo),
                markersize=3, color=styles.colour(algo), linewidth=styles.width(algo),
                label=algo)
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
