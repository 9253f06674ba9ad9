"""The d2l.ai "Parameter Servers" table, measured on the ranks at hand.

d2l syncs a 160 MB gradient on 4 GPUs behind one PCIe 3.0 x16 switch (16 GB/s links): on
GPU0 60 ms, via the CPU 80 ms, split into blocks 15 ms; and a ring on 8 V100 with NVLink
about 6 ms (2 * 160 MB / (3 * 18 GB/s)). Here every strategy in collectives.ALGORITHMS
moves the same gradient for real; the published figure and the hardware it stands for are
printed beside the measurement. Our ratios are what to compare: absolute times depend on
the machine (on one CPU host the "links" are memory copies).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import tables


@dataclass(frozen=True)
class Published:
    name: str
    ms: float
    hardware: str


PUBLISHED = {
    "root": Published("GPU0", 60, "4 GPUs on one PCIe 3.0 x16 switch, 16 GB/s per link"),
    "host": Published("CPU", 80, "the same 4-GPU box; the CPU is one more endpoint on the switch"),
    "blocked": Published("split", 15, "the same 4-GPU box; every GPU reduces 1/4"),
    "ring": Published("ring", 6, "8x V100, NVLink (DGX-1), 18 GB/s per link: 2*160MB/(3*18GB/s)"),
}


SAME_BOX = ("root", "host", "blocked")      # d2l measured these three on one machine


def table(rows: list[dict]) -> tuple[list[str], list[list], list[dict]]:
    """(headers, body, bar entries) for the d2l comparison, from allreduce rows of one size.

    Besides milliseconds, each strategy is shown relative to `blocked` both here and in d2l
    (GPU0/split = 4.0, CPU/split = 5.3): those ratios carry over between machines."""
    blocked = next((r for r in rows if r["algo"] == "blocked"), None)
    headers = ["strategy", "d2l name", "d2l ms", "d2l x split", "measured ms", "x blocked here",
               "#wrong", "d2l hardware"]
    body, bars = [], []
    for row in rows:
        published = PUBLISHED.get(row["algo"])
        ms = row["time_us"] / 1e3
        here = row["time_us"] / blocked["time_us"] if blocked else None
        there = published.ms / PUBLISHED["blocked"].ms if row["algo"] in SAME_BOX else None
        label = published.name if published else "(baseline)" if row["algo"] in ("mpi", "gloo") \
            else "-"
        body.append([tables.label(row), label, f"{published.ms:g}" if published else "-",
                     f"{there:.2f}" if there else "-", f"{ms:.1f}",
                     f"{here:.2f}" if here else "-",
                     row["wrong"] if row["wrong"] >= 0 else "n/a",
                     published.hardware if published else "-"])
        bars.append({"label": row["algo"] + (f" ({published.name})" if published else ""),
                     "measured_ms": ms, "d2l_ms": published.ms if published else None,
                     "measured_x_blocked": here, "d2l_x_split": there})
    return headers, body, bars
