"""Predicted sync time of any registered algorithm on a topology, from its own schedule.

    predict(preset("d2l-4gpu-pcie"), "root", 160_000_000)      -> 0.060 s

Two evaluators: "closed-form" (alpha-beta-gamma with the busiest link per step) and
"simulate" (max-min fair link sharing). Both read `ALGORITHMS.schedule(...)`, so a new
algorithm is priced as soon as it is registered with a schedule.
"""
from __future__ import annotations

from collectives import ALGORITHMS

from .model import Topology, TopologyError, closed_form
from .simulate import simulate

EVALUATORS = {"closed-form": closed_form, "simulate": simulate}


def predict(topology: Topology, algorithm: str, nbytes: int, ranks: int | None = None,
            evaluator: str = "closed-form", itemsize: int = 4) -> float:
    ranks = len(topology.ranks) if ranks is None else ranks
    if not 1 <= ranks <= len(topology.ranks):
        raise TopologyError(f"topology {topology.name!r} has {len(topology.ranks)} ranks; "
                            f"cannot model {ranks}")
    if nbytes < 0:
        raise TopologyError(f"size must be >= 0 bytes, got {nbytes}")
    if evaluator not in EVALUATORS:
        raise TopologyError(f"unknown evaluator {evaluator!r} (known: {', '.join(EVALUATORS)})")
    schedule = ALGORITHMS.schedule(algorithm, ranks, nbytes // itemsize, itemsize)
    return EVALUATORS[evaluator](topology, schedule, ranks)


def modelled_algorithms() -> list[str]:
    """Registered algorithms that publish a schedule of their own (not `auto`, which is
    whichever of them the local model picks)."""
    return [name for name in ALGORITHMS
            if name != "auto" and hasattr(ALGORITHMS[name], "allreduce_schedule")]
