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


def table(rows: list[dict]) -> tuple[list[str], list[list], list[dict]]:
    """(headers, body, bar entries) for the d2l comparison, from allreduce rows of one size."""
    ring = next((r for r in rows if r["algo"] == "ring"), None)
    headers = ["strategy", "d2l name", "d2l ms", "d2l hardware", "measured ms", "x ring here",
               "#wrong"]
    body, bars = [], []
    for row in rows:
        published = PUBLISHED.get(row["algo"])
        ms = row["time_us"] / 1e3
        relative = f"{row['time_us'] / ring['time_us']:.2f}" if ring else "-"
        body.append([row["algo"], published.name if published else "(baseline)" if row["algo"] in
                     ("mpi", "gloo") else "-", f"{published.ms:g}" if published else "-",
                     published.hardware if published else "-", f"{ms:.1f}", relative,
                     row["wrong"] if row["wrong"] >= 0 else "n/a"])
        bars.append({"label": row["algo"] + (f" ({published.name})" if published else ""),
                     "measured_ms": ms, "d2l_ms": published.ms if published else None})
    return headers, body, bars
