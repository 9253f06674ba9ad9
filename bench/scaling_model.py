"""`python -m bench scaling --preset P`: sync time vs node count (and message size) for every
strategy, and every variant a strategy asks to be drawn in (topology/cost.py: a parameter
server with 1, k and n servers...), from the cost model: no MPI, no ranks.

Each point is the closed-form price (topology/model.py) of the strategy's own compact
schedule on the preset with that many nodes, so 4096 nodes cost milliseconds. Node counts
are the powers of two in the range and its ends; where two strategies swap places between
two of them, the model is evaluated at the integer node counts in between to name the
exact one (bench/crossover.py). Output: a table per size, the crossovers as sentences, and
CSV + JSON + PNG in results/<timestamp>-scaling-model/ (with --json: one object per
plotted series, then one per crossover).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from topology.cost import modelled_algorithms, schedule_for, spare_nodes, variants
from topology import terms
from topology.model import TopologyError, closed_form
from topology.presets import preset

from . import crossover, plots, results, tables
from .units import format_size

EVALUATOR = "closed-form"


@dataclass(frozen=True)
class Strategy:
    label: str          # what the plot and the sentences call it
    algorithm: str      # its name in collectives.ALGORITHMS
    compression: str | None = None      # a codec (--compression): its compressed variant
    variant_label: str | None = None    # the uncompressed label whose settings it takes

    def schedule_settings(self, settings: dict) -> dict:
        return {**settings, "compression": self.compression} if self.compression else settings


class ScalingModel:
    """Seconds for (strategy, nodes, bytes) on one preset, each computed once."""

    def __init__(self, preset_name: str, gpus_per_node: int | None, itemsize: int):
        self.preset_name, self.itemsize = preset_name, itemsize
        self.settings = {} if gpus_per_node is None else {"gpus_per_node": gpus_per_node}
        one = preset(preset_name, nodes=1, **self.settings)
        self.per_node = len(one.ranks)
        self.source = one.source
        self.tree = one.tree is not None
        self._topologies: dict[int, object] = {}
        self._seconds: dict = {}
        self.notes: set[str] = set()

    def topology(self, nodes: int):
        """The preset with at least `nodes` nodes. On a tree the largest one built serves
        every smaller count (idle nodes carry nothing); otherwise exactly `nodes`."""
        if self.tree and self._topologies:
            biggest = max(self._topologies)
            if biggest >= nodes:
                return self._topologies[biggest]
        if nodes not in self._topologies:
            self._topologies[nodes] = preset(self.preset_name, nodes=nodes, **self.settings)
        return self._topologies[nodes]

    def reserve(self, drawn: list["Strategy"], nodes: int, nbytes: int) -> None:
        """Build the topology once, big enough for every strategy at `nodes` nodes with the
        spare nodes its servers ask for (a bigger one later would be built anew)."""
        spare = 0
        for strategy in drawn:
            settings = self.variant(strategy, nodes)
            if settings is not None:
                try:
                    spare = max(spare, spare_nodes(schedule_for(
                        strategy.algorithm, nodes * self.per_node, nbytes // self.itemsize,
                        self.itemsize, **strategy.schedule_settings(settings))))
                except (TopologyError, ValueError):
                    pass                    # said when the point itself is computed
        self.topology(nodes + spare)

    def variant(self, strategy: Strategy, nodes: int) -> dict | None:
        return variants(strategy.algorithm, nodes, self.per_node).get(
            strategy.variant_label or strategy.label)

    def seconds(self, strategy: Strategy, nodes: int, nbytes: int) -> float | None:
        key = (strategy, nodes, nbytes)
        if key not in self._seconds:
            self._seconds[key] = self._compute(strategy, nodes, nbytes)
        return self._seconds[key]

    def _compute(self, strategy: Strategy, nodes: int, nbytes: int,
                 price=closed_form) -> float | None:
        settings = self.variant(strategy, nodes)
        if settings is None:
            return None
        ranks = nodes * self.per_node
        try:
            schedule = schedule_for(strategy.algorithm, ranks, nbytes // self.itemsize,
                                    self.itemsize, **strategy.schedule_settings(settings))
            return price(self.topology(nodes + spare_nodes(schedule)), schedule, ranks)
        except (TopologyError, ValueError) as exc:
            self.notes.add(f"{strategy.label} not drawn at {nodes} node(s): {exc}")
            return None

    def split(self, strategy: Strategy, nodes: int, nbytes: int) -> dict[str, float] | None:
        """The time's terms (topology/terms.py): latency, overhead, bytes, reduce."""
        return self._compute(strategy, nodes, nbytes, terms.split)


def strategies(algorithms: list[str], nodes: int, per_node: int,
               compression: str | None = None) -> list[Strategy]:
    """Every variant label of every algorithm (as named at the largest node count); with a
    codec, each one's compressed variant beside it ("ring+topk:0.01")."""
    found = []
    for algo in algorithms:
        for label in variants(algo, nodes, per_node):
            found.append(Strategy(label, algo))
            if compression:
                found.append(Strategy(f"{label}+{compression}", algo, compression, label))
    labels = [s.label for s in found]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise TopologyError(f"strategy labels used twice: {', '.join(duplicated)}")
    return found


def sweep(model: ScalingModel, drawn: list[Strategy], counts: list[int], sizes: list[int]):
    """Rows (one per point) and series (one per strategy and size), largest clusters first
    so the biggest topology is built once."""
    model.reserve(drawn, max(counts), max(sizes))
    for nodes in sorted(counts, reverse=True):
        for nbytes in sizes:
            for strategy in drawn:
                model.seconds(strategy, nodes, nbytes)
    rows, series = [], []
    for nbytes in sizes:
        for s in drawn:
            points = [(n, model.seconds(s, n, nbytes)) for n in counts]
            points = [(n, t) for n, t in points if t is not None]
            base = {"algo": s.label, "algorithm": s.algorithm, "preset": model.preset_name,
                    "gpus_per_node": model.per_node, "bytes": nbytes, "evaluator": EVALUATOR}
            series.append({"kind": "series", **base, "nodes": [n for n, _ in points],
                           "ranks": [n * model.per_node for n, _ in points],
                           "seconds": [t for _, t in points],
                           "variants": [model.variant(s, n) for n, _ in points]})
            rows += [{**base, "nodes": n, "ranks": n * model.per_node, "seconds": t,
                      "variant": json.dumps(model.variant(s, n), sort_keys=True)}
                     for n, t in points]
    return rows, series


def find_crossovers(model: ScalingModel, drawn: list[Strategy], counts: list[int],
                    sizes: list[int]) -> list[dict]:
    """Along node count at each size (exact integer counts), and along size at the largest
    node count (between the sizes given)."""
    by_label = {s.label: s for s in drawn}
    labels = list(by_label)
    found = []
    for nbytes in sizes:
        def along_nodes(label, nodes, nbytes=nbytes):
            return model.seconds(by_label[label], nodes, nbytes)
        for change in crossover.changes(labels, sorted(counts), along_nodes, exact=True):
            why = terms.cause(model.split(by_label[change["slower"]], change["first"], nbytes),
                              model.split(by_label[change["faster"]], change["first"], nbytes))
            found.append({**change, "axis": "nodes", "bytes": nbytes, "cause": why,
                          "leader": _hands_over(model, drawn, change, nbytes),
                          "sentence": crossover.sentence(change, _nodes,
                                                         f"at {format_size(nbytes)}") +
                          f": {why}"})
    if len(sizes) > 1:
        top = max(counts)

        def along_size(label, nbytes):
            return model.seconds(by_label[label], top, nbytes)
        for change in crossover.changes(labels, sorted(sizes), along_size, exact=False):
            why = terms.cause(model.split(by_label[change["slower"]], top, change["first"]),
                              model.split(by_label[change["faster"]], top, change["first"]))
            leader = not change["level"] and \
                fastest(model, drawn, top, change["last"]) == change["slower"] and \
                fastest(model, drawn, top, change["first"]) == change["faster"]
            found.append({**change, "axis": "bytes", "nodes": top, "cause": why,
                          "leader": leader,
                          "sentence": crossover.sentence(change, format_size,
                                                         f"at {_nodes(top)}") + f": {why}"})
    return found


def fastest(model: ScalingModel, drawn: list[Strategy], nodes: int, nbytes: int):
    """The label of the fastest strategy at this point (None where one takes no time at
    all: nothing to sum, nothing to rank)."""
    times = {s.label: model.seconds(s, nodes, nbytes) for s in drawn}
    times = {label: t for label, t in times.items() if t is not None}
    if not times or min(times.values()) <= 0:
        return None
    return min(times, key=lambda label: (times[label], label))


def _hands_over(model: ScalingModel, drawn: list[Strategy], change: dict, nbytes: int) -> bool:
    """Whether this crossover is where the fastest strategy changes hands."""
    return not change["level"] and \
        fastest(model, drawn, change["last"], nbytes) == change["slower"] and \
        fastest(model, drawn, change["first"], nbytes) == change["faster"]


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.4g}"


def run(args) -> int:
    painter = plots.Painter() if plots.available() else None    # loads matplotlib meanwhile
    model = ScalingModel(args.preset, args.gpus_per_node, args.itemsize)
    counts, sizes = args.node_counts, args.size_list
    if args.algo == "all":
        model.notes.update(f"{name} not drawn: it has no compact schedule (allreduce_pattern) "
                           f"to price at this scale" for name in modelled_algorithms()
                           if name not in args.algorithms)
    try:
        drawn = strategies(args.algorithms, max(counts), model.per_node,
                           getattr(args, "compression", None))
        rows, series = sweep(model, drawn, counts, sizes)
        found = find_crossovers(model, drawn, counts, sizes)
    except TopologyError as exc:
        if painter:
            painter.cancel()
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    folder = results.new_folder(args.out, "scaling-model")
    results.write_csv(folder / "scaling_model.csv", rows, list(rows[0]) if rows else ["algo"])
    where = (f"{args.preset} ({model.source}), {model.per_node} GPU(s) per node, "
             f"{args.dtype}")
    images = []
    if painter:
        title = f"modelled allreduce sync time: {where}"
        handovers = [{k: c[k] for k in ("bytes", "first", "faster", "slower")}
                     for c in found if c.get("leader") and c["axis"] == "nodes"]
        painter.draw(plots.time_vs_nodes, series, folder / "scaling_model.png", title,
                     handovers)
        if len(sizes) > 1:
            painter.draw(plots.time_vs_size, series, max(counts),
                         folder / "scaling_model_sizes.png", title)
        try:
            images = painter.finish()
        except RuntimeError as exc:
            model.notes.add(f"plots skipped: {exc}")
    else:
        model.notes.add("plots skipped: matplotlib is not installed (pip install ringps[plot])")
    results.write_json(folder / "results.json", {
        "command": "scaling --preset", "preset": args.preset, "source": model.source,
        "gpus_per_node": model.per_node, "dtype": args.dtype, "evaluator": EVALUATOR,
        "node_counts": counts, "sizes": sizes, "series": series, "crossovers": found,
        "notes": sorted(model.notes)})
    if args.json:
        for line in series + found:
            print(results.json_line(line))
        return 0
    if args.quiet:
        return 0
    labels = [s.label for s in drawn]
    for nbytes in sizes:
        body = [[n, n * model.per_node] + [_ms(model.seconds(s, n, nbytes)) for s in drawn]
                for n in counts]
        print(f"# modelled sync time (ms) of a {format_size(nbytes)} allreduce vs node count: "
              f"{where}; {EVALUATOR} evaluator over each strategy's compact schedule")
        print(tables.text_table(["nodes", "ranks"] + labels, body) + "\n")
    print("# where the fastest strategy changes, and why (node counts exact: the model "
          "evaluated at every integer count between samples where the order changes; the "
          "cause is the term, topology/terms.py, that overtakes the other's lead)")
    handovers = [c for c in found if c.get("leader")]
    for change in handovers:
        print(f"#   {change['sentence']}")
    if not handovers:
        print("#   none: the same strategy is fastest at every node count")
    others = len(found) - len(handovers)
    if others:
        print(f"# {others} more crossover(s) between strategies that are not the fastest: "
              f"results.json, or --json")
    for note in sorted(model.notes):
        print(f"# note: {note}")
    print(f"# results: {folder}" + "".join(f"\n# plot: {image}" for image in images))
    return 0
