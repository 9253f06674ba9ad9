"""Play a schedule over a topology's links with bandwidth sharing.

Within a step every transfer starts at once (after its path latency); the flows crossing a
directed link share it max-min fairly (progressive filling), so a flow held back elsewhere
leaves its share to the others. When a flow finishes the rates are recomputed. A receiver
reduces what arrived (gamma per byte) after its last inflow. The step ends when the last
flow and reduction are done; steps run one after another, as the algorithms wait on them.

Where the closed form charges each step its busiest link, this finds the finishing order,
so uneven steps (one big transfer beside small ones) come out right as well.
"""
from __future__ import annotations

from .model import Topology, sites, step_loads


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
    flows = [{"left": float(nbytes), "hops": hops, "start": latency, "dst": dst, "reduce": r,
              "done": None} for nbytes, hops, latency, dst, r in loads]
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
    end = {}
    for f in flows:
        end[f["dst"]] = max(end.get(f["dst"], 0.0), f["done"])
    reduced: dict = {}
    for nbytes, _, _, dst, r in loads:
        if r:
            reduced[dst] = reduced.get(dst, 0.0) + nbytes
    return max(end.get(d, 0.0) + topology.gamma * reduced.get(d, 0.0) for d in end)


def simulate(topology: Topology, schedule, ranks: int) -> float:
    """Seconds for `schedule` on `topology`, with link sharing simulated step by step
    (a CompactSchedule is expanded first: the simulator needs every flow)."""
    if hasattr(schedule, "expand"):
        schedule = schedule.expand()
    where = sites(schedule)
    return sum(simulate_step(topology, step, ranks, where) for step in schedule.steps)
