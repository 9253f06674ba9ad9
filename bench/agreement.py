"""Does `auto` pick what the machine picks? For every (size, ranks) cell the suite measured,
the model's pick (topology/auto.py with the fit of this very run), the measured best of the
same candidates, and the ratio of the pick's measured time to the best's. A pick within
WITHIN of the best counts as agreeing; the target is agreement in TARGET of the cells."""
from __future__ import annotations

import numpy as np

from .units import format_size

WITHIN = 0.10
TARGET = 0.90


def measured_cells(rows: list[dict], names: list[str]) -> dict:
    """{(ranks, bytes): {algorithm: median seconds}} for allreduce rows of the candidates on
    2+ ranks (on one rank there is nothing to choose between). A cell the suite measured in
    more than one section (the sweep's 4 ranks at 16 MB, again in the scaling section) takes
    the median of all its rows, not whichever came last."""
    cells: dict = {}
    for r in rows:
        if r.get("collective", "allreduce") == "allreduce" and r["algo"] in names \
                and int(r["ranks"]) > 1 and float(r["time_us"]) > 0:
            cells.setdefault((int(r["ranks"]), int(r["bytes"])), {}).setdefault(
                r["algo"], []).append(float(r["time_us"]) * 1e-6)
    return {key: {name: float(np.median(seen)) for name, seen in times.items()}
            for key, times in sorted(cells.items()) if len(times) > 1}


def repeat_ratios(rows: list[dict]) -> list[float]:
    """The same algorithm timed twice in one cell: per allreduce row of `auto` on 2+ ranks,
    its time over the median time of the algorithm it ran (`chosen`) measured beside it.
    How far these stray from 1 is the noise a pick / best ratio has to be read against."""
    cells: dict = {}
    for r in rows:
        if r.get("collective", "allreduce") == "allreduce" and int(r["ranks"]) > 1 \
                and float(r["time_us"]) > 0:
            cells.setdefault((int(r["ranks"]), int(r["bytes"])), []).append(r)
    ratios = []
    for cell in cells.values():
        for r in cell:
            if r["algo"] != "auto" or not r.get("chosen"):
                continue
            chosen = [float(o["time_us"]) for o in cell if o["algo"] == r["chosen"]]
            if chosen:
                ratios.append(float(r["time_us"]) / float(np.median(chosen)))
    return ratios


def agreement(rows: list[dict], parameters: tuple) -> dict:
    """Per cell: pick, measured best, ratio, reason; and the share of cells that agree."""
    from topology import auto
    result = []
    for (ranks, nbytes), times in measured_cells(rows, auto.candidates()).items():
        pick, reason = auto.choose(ranks, nbytes, parameters)
        best = min(times, key=times.get)
        ratio = times[pick] / times[best] if pick in times else None
        result.append({"ranks": ranks, "bytes": nbytes, "pick": pick, "best": best,
                       "ratio": ratio, "agrees": ratio is not None and ratio <= 1 + WITHIN,
                       "reason": reason})
    judged = [c for c in result if c["ratio"] is not None]
    share = sum(c["agrees"] for c in judged) / len(judged) if judged else None
    return {"cells": result, "share": share}


def section(rows: list[dict], parameters: tuple) -> dict:
    found = agreement(rows, parameters)
    headers = ["ranks", "size", "model's pick", "measured best", "pick / best",
               f"within {WITHIN:.0%}"]
    body = [[c["ranks"], format_size(c["bytes"]), c["pick"], c["best"],
             f"{c['ratio']:.2f}" if c["ratio"] is not None else "pick not measured",
             "yes" if c["agrees"] else "NO"] for c in found["cells"]]
    share = found["share"]
    verdict = "no cell to judge" if share is None else (
        f"agrees in {sum(c['agrees'] for c in found['cells'])} of "
        f"{sum(c['ratio'] is not None for c in found['cells'])} cells ({share:.0%}; target "
        f"{TARGET:.0%}: {'met' if share >= TARGET else 'NOT met'})")
    spread = [abs(r - 1) for r in repeat_ratios(rows)]
    noise = "" if not spread else (
        f" The same algorithm timed twice in one cell (`auto`'s row and its pick's own row) "
        f"differed by a median of {np.median(spread):.0%} and at most {max(spread):.0%} in "
        f"this run ({len(spread)} pairs): the noise a pick / best ratio is read against.")
    reasons = "\n".join(f"- {c['ranks']} ranks, {format_size(c['bytes'])}: {c['reason']}"
                        for c in found["cells"])
    rows_out = [{k: v for k, v in c.items()} for c in found["cells"]]
    return {"title": "auto against the measurements", "name": "agreement", "rows": rows_out,
            "table": (headers, body), "images": [], "share": share,
            "text": f"`auto` (the model fitted above) {verdict}. A pick agrees when its "
                    f"measured time is within {WITHIN:.0%} of the fastest candidate measured "
                    f"in the same cell." + noise,
            "after": "Why each pick (model terms in ms: latency = alpha x steps, overhead = "
                     "o x messages at the busiest endpoint, bytes = over the busiest link / "
                     "beta, reduce = gamma x bytes reduced, board = one post of a oneshot "
                     "that runs on the board, memory = the busiest rank's memory traffic "
                     "(bytes read + written on the shared-memory transport) / its bandwidth; "
                     "with more ranks than cores, overhead, bytes, reduce and memory are each "
                     "at least the node's total over the cores the ranks get):\n\n" + reasons}
