"""Predicted sync time of any registered algorithm on a topology, from its own schedule.

    predict(preset("d2l-4gpu-pcie"), "root", 160_000_000)      -> 0.060 s

Two evaluators: "closed-form" (alpha-beta-gamma and per-message overhead, with the busiest
link per step) and "simulate" (max-min fair link sharing); "terms" is the closed form split
into latency, overhead, bytes and reduce (topology/terms.py). Both read the algorithm's own schedule, so a new
algorithm is priced as soon as it is registered with one: its compact form
(`allreduce_pattern`, collectives/schedule.py) where the module has it, which prices a
4096-node cluster in milliseconds, else `allreduce_schedule`.

The hook for strategies with settings (a parameter server's server count, ranks per node):

    allreduce_pattern(n, count, itemsize, root=0, **variant) -> CompactSchedule
    allreduce_variants(nodes, ranks_per_node) -> {label: variant}      (optional)

`variants()` asks a module for the versions worth drawing on a cluster of `nodes` nodes
with `ranks_per_node` ranks each (e.g. {"ps(1 server)": {"servers": 1}, "ps(n servers)":
{"servers": nodes}}); labels stay the same from one node count to the next, values may
follow it. A module without the hook is drawn once, as itself, with no variant.

A topology that declares a ring layout (several rings over its ranks: d2l's DGX-1) has
`ring` priced over it, as a job run with that layout (RINGPS_RINGS) would move its bytes;
`rings="rank-order"` prices the plain ring instead.
"""
from __future__ import annotations

import functools
import inspect

from collectives import ALGORITHMS

from .model import Topology, TopologyError, closed_form
from .simulate import simulate
from .terms import split

EVALUATORS = {"closed-form": closed_form, "simulate": simulate,
              "terms": split}        # the closed form split into its terms: {term: seconds}


def takes_rings(algorithm: str) -> bool:
    """Whether `algorithm`'s schedule runs over a ring layout (its pattern takes `rings`)."""
    return _has_rings(getattr(ALGORITHMS[algorithm], "allreduce_pattern", None))


@functools.cache
def _has_rings(pattern) -> bool:
    return pattern is not None and "rings" in inspect.signature(pattern).parameters


def ring_layout(topology: Topology, algorithm: str, ranks: int) -> dict:
    """{"rings": the topology's layout} where `algorithm` runs over ring layouts and the
    topology declares one for the ranks modelled (all of its ranks), else {}."""
    if takes_rings(algorithm) and topology.rings and ranks == len(topology.ranks):
        return {"rings": topology.rings}
    return {}


def schedule_for(algorithm: str, ranks: int, count: int, itemsize: int, **variant):
    """The algorithm's compact schedule where it has one, else its explicit one; with
    compression="topk:0.01" (a codec), its compressed variant's (collectives/compressed.py)."""
    if variant.get("compression"):
        from collectives.compressed import allreduce_pattern
        return allreduce_pattern(algorithm, ranks, count, **variant)
    pattern = getattr(ALGORITHMS[algorithm], "allreduce_pattern", None)
    if pattern is not None:
        return pattern(ranks, count, itemsize, **variant)
    if variant:
        raise TopologyError(f"{algorithm} has no allreduce_pattern to take {variant}")
    return ALGORITHMS.schedule(algorithm, ranks, count, itemsize)


def predict(topology: Topology, algorithm: str, nbytes: int, ranks: int | None = None,
            evaluator: str = "closed-form", itemsize: int = 4, **variant) -> float:
    ranks = len(topology.ranks) if ranks is None else ranks
    if not 1 <= ranks <= len(topology.ranks):
        raise TopologyError(f"topology {topology.name!r} has {len(topology.ranks)} ranks; "
                            f"cannot model {ranks}")
    if nbytes < 0:
        raise TopologyError(f"size must be >= 0 bytes, got {nbytes}")
    if evaluator not in EVALUATORS:
        raise TopologyError(f"unknown evaluator {evaluator!r} (known: {', '.join(EVALUATORS)})")
    variant = {**ring_layout(topology, algorithm, ranks), **variant}
    schedule = schedule_for(algorithm, ranks, nbytes // itemsize, itemsize, **variant)
    return EVALUATORS[evaluator](topology, schedule, ranks)


def modelled_algorithms() -> list[str]:
    """Registered algorithms that publish a schedule of their own (not `auto`, which is
    whichever of them the local model picks)."""
    return [name for name in ALGORITHMS
            if name != "auto" and hasattr(ALGORITHMS[name], "allreduce_schedule")]


def scalable_algorithms() -> list[str]:
    """Modelled algorithms with a compact schedule: the ones priced at cluster scale."""
    return [name for name in modelled_algorithms()
            if hasattr(ALGORITHMS[name], "allreduce_pattern")]


def variants(algorithm: str, nodes: int, ranks_per_node: int) -> dict[str, dict]:
    """{label: variant keywords} for drawing `algorithm` on nodes x ranks_per_node ranks."""
    hook = getattr(ALGORITHMS[algorithm], "allreduce_variants", None)
    return dict(hook(nodes, ranks_per_node)) if hook is not None else {algorithm: {}}


def spare_nodes(schedule) -> int:
    """How many nodes beyond the ranks' own the schedule's `locations` put servers on
    (("spare", k) locations): the topology must have that many more."""
    used = [where[1] for where in getattr(schedule, "locations", {}).values()
            if isinstance(where, tuple) and len(where) == 2 and where[0] == "spare"]
    return max(used) + 1 if used else 0
