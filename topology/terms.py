"""The closed form's terms apart: how much of a predicted time is latency, per-message
overhead, bytes over the busiest link, and reduction. Each step's price is a sum of four
independent maxima (model.step_time), so pricing the schedule on copies of the topology
with all but one term switched off splits the total exactly:

    latency   path latencies (alpha), one per step
    overhead  o x messages at the busiest endpoint, per step
    bytes     bytes over the busiest link / its bandwidth, per step
    reduce    gamma x bytes reduced at the busiest endpoint, per step

This is what names the cause of a crossover ("its overhead (+66 us) outweighs its lead in
latency (-60 us)")."""
from __future__ import annotations

from dataclasses import replace

from .model import Topology, closed_form

TERMS = ("latency", "overhead", "bytes", "reduce")
FREE = 1e30             # a bandwidth that makes bytes cost nothing
PICOSECOND = 1e-12
_alone: dict = {}       # id(topology) -> (topology, {term: topology with only that term})


def alone(topology: Topology) -> dict[str, Topology]:
    """{term: a copy of `topology` charging that term only}."""
    cached = _alone.get(id(topology))
    if cached is None or cached[0] is not topology:
        def links(latency: bool, bandwidth: bool):
            return [replace(link, latency=link.latency if latency else 0.0,
                            bandwidth=link.bandwidth if bandwidth else FREE)
                    for link in topology.links]
        o, gamma = topology.overhead, topology.gamma
        cached = _alone[id(topology)] = (topology, {
            "latency": replace(topology, links=links(True, False), overhead=0.0, gamma=0.0),
            "overhead": replace(topology, links=links(False, False), overhead=o, gamma=0.0),
            "bytes": replace(topology, links=links(False, True), overhead=0.0, gamma=0.0),
            "reduce": replace(topology, links=links(False, False), overhead=0.0, gamma=gamma)})
    return cached[1]


def split(topology: Topology, schedule, ranks: int) -> dict[str, float]:
    """{term: seconds} for `schedule` on `topology`; they add up to closed_form's total
    (below a picosecond is what FREE bandwidth leaves behind: 0)."""
    parts = {term: closed_form(copy, schedule, ranks) for term, copy in alone(topology).items()}
    return {term: seconds if seconds > PICOSECOND else 0.0 for term, seconds in parts.items()}


def cause(slower: dict[str, float], faster: dict[str, float]) -> str:
    """Which terms overtake which, for the strategy that falls behind: 'its overhead costs
    +66 us more, outweighing its lead in latency (-60 us)', from both strategies' split
    times (gaps below a millionth of the total are level)."""
    gap = {term: slower[term] - faster[term] for term in TERMS}
    level = 1e-6 * max(sum(slower.values()), sum(faster.values()))
    worse = sorted((t for t in TERMS if gap[t] > level), key=lambda t: -gap[t])
    better = sorted((t for t in TERMS if gap[t] < -level), key=lambda t: gap[t])
    if not worse:
        return "level in every term"
    said = "its " + " and ".join(f"{t} ({_us(gap[t])})" for t in worse)
    if better:
        return (f"{said} outweigh{'s' if len(worse) == 1 else ''} its lead in "
                + " and ".join(f"{t} ({_us(gap[t])})" for t in better))
    return f"{said}, with nothing in its favour"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:+.3g} us" if abs(seconds) < 1e-3 else f"{seconds * 1e3:+.3g} ms"
