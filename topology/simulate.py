"""Play a schedule over a topology's links with bandwidth sharing.

Within a step every endpoint first posts its sends one after another, each costing the
topology's per-message overhead o (LogGP), and a transfer goes on the wire when posted
(after its path latency); the flows crossing a directed link share it max-min fairly
(progressive filling), so a flow held back elsewhere leaves its share to the others. When
a flow finishes the rates are recomputed. An endpoint takes its arrivals in order, o each,
once its own sends are posted (one CPU does both), then reduces what arrived (gamma per
byte). The step ends when the last endpoint is done; steps run one after another, as the
algorithms wait on them. On a topology with `cores` (ranks that share a node's CPUs) a step
also lasts at least the longest path latency plus what the node's cores need for all of
its endpoints' work (overheads, arrivals over their links, reductions), which ranks then
take in turns.

Where the closed form charges each step its busiest link, this finds the finishing order,
so uneven steps (one big transfer beside small ones) come out right as well.
"""
from __future__ import annotations

from .model import Topology, crowded, sites, step_loads, step_work


def _rates(flows: list[dict], capacity: dict) -> None:
    """Max-min fair rates for the active flows (progressive filling)."""
    remaining = dict(capacity)
    active = [f for f in flows if f["left"] > 0]
    for f in active:
        f["rate"] = None
    users: dict = {}
    for f in active:
        for hop in f["hops"]:
            users.setdefault(hop, []).append(f)
    while any(f["rate"] is None for f in active):
        share, link = min(((remaining[h] / sum(1 for f in fl if f["rate"] is None), h)
                           for h, fl in users.items() if any(f["rate"] is None for f in fl)),
                          key=lambda x: x[0])
        for f in users[link]:
            if f["rate"] is None:
                f["rate"] = share
                for hop in f["hops"]:
                    remaining[hop] -= share


def simulate_step(topology: Topology, step, ranks: int, locations: dict | None = None) -> float:
    loads = step_loads(topology, step, ranks, locations)
    if not loads:
        return 0.0
    o = topology.overhead
    posted: dict = {}                       # endpoint -> sends posted so far
    flows = []
    for nbytes, hops, latency, dst, r, src in loads:
        posted[src] = posted.get(src, 0) + 1
        flows.append({"left": float(nbytes), "hops": hops, "start": latency + o * posted[src],
                      "dst": dst, "reduce": r, "done": None})
    capacity = {hop: topology.links[hop[0]].bandwidth for f in flows for hop in f["hops"]}
    now = min(f["start"] for f in flows)
    while True:
        running = [f for f in flows if f["left"] > 0 and f["start"] <= now]
        waiting = [f for f in flows if f["left"] > 0 and f["start"] > now]
        if not running and not waiting:
            break
        if not running:
            now = min(f["start"] for f in waiting)
            continue
        _rates(running, capacity)
        finish = min(f["left"] / f["rate"] for f in running)
        next_start = min((f["start"] - now for f in waiting), default=float("inf"))
        dt = min(finish, next_start)
        for f in running:
            f["left"] -= f["rate"] * dt
            if f["left"] <= 1e-9 * max(1.0, f["rate"]):
                f["left"], f["done"] = 0.0, now + dt
        now += dt
    arrivals: dict = {}
    for f in flows:
        arrivals.setdefault(f["dst"], []).append(f["done"])
    end = {src: o * count for src, count in posted.items()}     # busy posting its sends
    for dst, times in arrivals.items():
        clock = end.get(dst, 0.0)
        for arrival in sorted(times):                          # taken one by one
            clock = max(clock, arrival) + o
        end[dst] = clock
    reduced: dict = {}
    for nbytes, _, _, dst, r, _ in loads:
        if r:
            reduced[dst] = reduced.get(dst, 0.0) + nbytes
    finished = max(t + topology.gamma * reduced.get(e, 0.0) for e, t in end.items())
    return max(finished, _turns(topology, loads))


def _turns(topology: Topology, loads) -> float:
    """The longest path latency, then the seconds the busiest node's cores need for all of
    its endpoints' work (0 without a core budget)."""
    if not topology.crowded_nodes:
        return 0.0
    _, messages, arriving, reduced = step_work(topology, loads)
    work = {e: topology.overhead * messages.get(e, 0) + arriving.get(e, 0.0)
            + topology.gamma * reduced.get(e, 0.0) for e in {*messages, *arriving, *reduced}}
    return max(flow[2] for flow in loads) + crowded(topology, work)


def simulate(topology: Topology, schedule, ranks: int) -> float:
    """Seconds for `schedule` on `topology`, with link sharing simulated step by step
    (a CompactSchedule is expanded first: the simulator needs every flow)."""
    if hasattr(schedule, "expand"):
        schedule = schedule.expand()
    where = sites(schedule)
    return sum(simulate_step(topology, step, ranks, where) for step in schedule.steps)
