"""`python -m bench model`: what the cost model predicts for each algorithm on a topology,
by both evaluators, beside d2l's published figure where the preset is d2l's machine."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from collectives.rings import LayoutError
from topology.cost import modelled_algorithms, predict, ring_layout, takes_rings
from topology.model import TopologyError
from topology.terms import TERMS
from topology.presets import NVLINK2

from . import tables
from .d2l import PUBLISHED
from .units import format_size

D2L_MACHINE = {"d2l-4gpu-pcie": ("root", "host", "blocked"), "dgx1-v100": ("ring",)}


def rows_for(topology, nbytes: int, ranks: int, algorithms: list[str],
             rings: str | None = None) -> list[dict]:
    """One row per algorithm; where the topology declares a ring layout (or `rings` names
    one), `ring` is priced over it and once more as the plain ring ("ring(rank order)")."""
    rows = []
    for algo in algorithms:
        versions = [(algo, {})]
        layout = ring_layout(topology, algo, ranks).get("rings")
        if rings is not None and takes_rings(algo):
            layout = versions[0][1]["rings"] = rings
        if layout and layout != "rank-order":
            versions.append((f"{algo}(rank order)", {"rings": "rank-order"}))
        for label, variant in versions:
            closed = predict(topology, algo, nbytes, ranks, "closed-form", **variant)
            parts = predict(topology, algo, nbytes, ranks, "terms", **variant)
            simulated = predict(topology, algo, nbytes, ranks, "simulate", **variant)
            own = layout in (None, topology.rings) or label != algo   # d2l's layout
            published = PUBLISHED[algo].ms / 1e3 if label in D2L_MACHINE.get(topology.name, ()) \
                and ranks == len(topology.ranks) and own else None
            rows.append({"algo": label, "preset": topology.name, "ranks": ranks,
                         "bytes": nbytes, "seconds": closed, "simulated_seconds": simulated,
                         "terms": parts,
                         "d2l_seconds": published,
                         "rings": layout if layout and label == algo else None})
    return rows


def ring_footnote(rows: list[dict]) -> str:
    """Why the ring beside d2l's figure differs from it: d2l's 2*S/B counts every rank
    sending 2S, where a ring sends 2(n-1)/n * S; that factor is printed with the model."""
    lines = []
    for r in rows:
        if r["algo"] == "ring" and r["d2l_seconds"] and r["rings"]:
            n = r["ranks"]
            formula = 2 * r["bytes"] / (3 * NVLINK2)
            exact = formula * (n - 1) / n
            off_exact = (r["seconds"] / exact - 1) * 100
            off_d2l = (r["seconds"] / r["d2l_seconds"] - 1) * 100
            lines.append(
                f"ring over {r['rings']}:\n  d2l's 2*S/(3*18 GB/s) = {formula * 1e3:.2f} ms counts "
                f"each GPU sending 2S; a ring sends 2(n-1)/n*S,\n  {n - 1}/{n} of that: "
                f"{exact * 1e3:.2f} ms, which the model is {off_exact:+.1f}% from (the rest is "
                f"2(n-1) link latencies).\n  Against d2l's rounded 6 ms: {off_d2l:+.1f}%.")
    return "\n".join(lines)


def run(args) -> int:
    topology = args.topology_object
    ranks = args.ranks or len(topology.ranks)
    algorithms = modelled_algorithms() if args.algo == "all" else args.algo.split(",")
    try:
        rows = rows_for(topology, args.size, ranks, algorithms, getattr(args, "rings", None))
    except (TopologyError, LayoutError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    body = []
    for r in rows:
        d2l = r["d2l_seconds"]
        body.append([r["algo"], f"{r['seconds'] * 1e3:.2f}"] +
                    [f"{r['terms'][t] * 1e3:.3g}" for t in TERMS] +
                    [f"{r['simulated_seconds'] * 1e3:.2f}",
                     f"{d2l * 1e3:g}" if d2l else "-",
                     f"{(r['seconds'] / d2l - 1) * 100:+.1f}%" if d2l else "-"])
    print(f"# model: {format_size(args.size)} allreduce on {ranks} ranks of {topology.name} "
          f"({topology.source})")
    print(tables.text_table(["algo", "closed-form ms"] + [f"= {t}" if t == TERMS[0] else f"+ {t}"
                                                          for t in TERMS] +
                            ["simulated ms", "d2l ms", "vs d2l"], body))
    footnote = ring_footnote(rows)
    if footnote:
        print(footnote)
    return 0


def _bandwidth(bytes_per_second: float) -> str:
    return "free (not fitted)" if bytes_per_second >= 1e29 else f"{bytes_per_second / 1e9:.2f} GB/s"


def calibration_section(rows: list[dict], folder, say=print, store=None,
                        cores: int | None = None) -> dict:
    """Fit `local` to measured rows (taken on `cores` CPUs; default this machine's), store
    it (calibrate.store_path(), or `store`), say where and how good the fit is per algorithm
    and size band, and plot model lines over the measured points."""
    from topology import calibrate
    from . import plots
    fit = calibrate.fit(rows, cores)
    path = calibrate.save(fit, store)
    if folder is not None:
        calibrate.save(fit, Path(folder) / "local.json")       # the run keeps its own copy
    points = []
    for r in calibrate.usable_rows(rows):
        ranks, nbytes = int(r["ranks"]), int(r["bytes"])
        collective = r.get("collective", "allreduce")
        model = float(calibrate.coefficients(r["algo"], ranks, nbytes, collective,
                                             calibrate._itemsize(r), cores=fit.cores,
                                             core_share=fit.core_share, board=True,
                                             memory=True)
                      @ fit.terms())
        points.append({"algo": calibrate._label(r), "preset": "local", "ranks": ranks,
                       "bytes": nbytes, "seconds": model,
                       "measured_seconds": float(r["time_us"]) * 1e-6,
                       "min_seconds": float(r.get("min_us") or r["time_us"]) * 1e-6,
                       "max_seconds": float(r.get("max_us") or r["time_us"]) * 1e-6})
    headers, body = error_table(fit)
    reads = "" if store is None or Path(store) == calibrate.store_path() else \
        f" (auto and the local preset read it with RINGPS_LOCAL_TOPOLOGY={path})"
    text = (f"alpha {fit.alpha * 1e6:.2f} us, beta {fit.beta / 1e9:.2f} GB/s, gamma "
            f"{fit.gamma * 1e9:.3f} ns/B, overhead {fit.overhead * 1e6:.2f} us per message, "
            f"board {fit.board * 1e6:.2f} us per post (a oneshot of up to 256 KB in one C "
            f"call), memory {_bandwidth(fit.memory_bandwidth)} of memory traffic per rank, "
            f"ranks sharing {fit.cores} cores (taking turns, they get {fit.core_share:.0%} of "
            f"them: the share whose fit orders the strategies measured side by side most "
            f"like the machine), from {fit.points} measured rows; stored in {path}{reads}. Relative error of the "
            f"model per algorithm and size band; targets: " +
            ", ".join(f"{band} within {t:.0%}" for band, t in calibrate.TARGETS.items()) + ".")
    say(f"# calibration: {text}\n{tables.text_table(headers, body)}\n")
    images = []
    if folder is not None and plots.available():
        images = [str(plots.model_vs_measured(points, Path(folder) / "calibration.png",
                                              "local model (lines) vs measured (points, "
                                              "min-max bars)"))]
    return {"title": "calibration of the local model", "text": text, "table": (headers, body),
            "images": images, "points": points, "name": "calibration", "fit": fit}


def error_table(fit) -> tuple[list[str], list[list]]:
    """Median and worst relative error per algorithm and size band, against the target."""
    from topology.calibrate import TARGETS
    headers = ["algo", "sizes", "median error", "worst error", "points", "target",
               "median met"]
    body = [[algo, band, f"{e['median'] * 100:.0f}%", f"{e['worst'] * 100:.0f}%", e["points"],
             f"{TARGETS[band] * 100:.0f}%", "yes" if e["median"] <= TARGETS[band] else "NO"]
            for algo, bands in fit.errors.items() for band, e in bands.items()]
    return headers, body


def calibrate(args) -> int:
    from topology import calibrate as cal
    try:
        rows = cal.read_rows(args.folder)
        section = calibration_section(rows, Path(args.folder),
                                      say=(lambda _: None) if args.json else print,
                                      store=args.out, cores=cal.measured_cores(args.folder))
    except (TopologyError, OSError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for point in section["points"]:
            print(json.dumps(point))
        return 0
    from . import agreement                 # what auto, so fitted, picks in the measured cells
    found = agreement.section(rows, section["fit"].parameters())
    if found["table"][1]:
        print(f"# auto against the measurements: {found['text']}\n"
              f"{tables.text_table(*found['table'])}")
    return 0
