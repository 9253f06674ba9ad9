"""A topology is endpoints (devices, host memory), switches, and links between them with a
latency alpha and a bandwidth beta per direction; ranks live on endpoints.

Any strategy is priced from its own schedule (collectives/schedule.py): every transfer is
routed over the links, and the closed-form alpha-beta-gamma evaluator charges each step

    max over transfers of the path latency
  + max over directed links of (bytes crossing it) / (its bandwidth)     <- contention
  + gamma * max over receivers of the bytes it must reduce

and sums the steps. So GPU0's incast (3 x 160 MB into one PCIe link) and the CPU's extra
endpoint fall out of the schedule and the links, not out of a table of answers.
simulate.py plays the same schedule with max-min fair sharing instead of the bound.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


class TopologyError(ValueError):
    pass


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    bandwidth: float          # bytes/s, each direction
    latency: float = 0.0      # seconds
    kind: str = ""            # pcie, nvlink, nvswitch, ethernet, infiniband, memory


@dataclass
class Topology:
    name: str
    endpoints: dict[str, dict]            # name -> {"kind": "gpu"|"cpu", "node": int}
    switches: list[str]
    links: list[Link]
    ranks: list[str]                      # rank r lives on endpoint ranks[r]
    hosts: dict[int, str] = field(default_factory=dict)   # node -> its host-memory endpoint
    gamma: float = 0.0                    # seconds per byte reduced
    source: str = ""

    def __post_init__(self):
        names = set(self.endpoints) | set(self.switches)
        for link in self.links:
            for end in (link.a, link.b):
                if end not in names:
                    raise TopologyError(f"topology {self.name!r}: link {link.a}-{link.b} names "
                                        f"{end!r}, which is neither an endpoint nor a switch")
            if link.bandwidth <= 0 or link.latency < 0:
                raise TopologyError(f"topology {self.name!r}: link {link.a}-{link.b} needs "
                                    f"bandwidth > 0 and latency >= 0")
        for rank, end in enumerate(self.ranks):
            if end not in self.endpoints:
                raise TopologyError(f"topology {self.name!r}: rank {rank} is on unknown "
                                    f"endpoint {end!r}")
        self._adjacent: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
        for i, link in enumerate(self.links):
            self._adjacent[link.a].append((link.b, i))
            self._adjacent[link.b].append((link.a, i))
        self._routes: dict[tuple[str, str], list[tuple[int, int]]] = {}

    @property
    def nodes(self) -> int:
        return len({e["node"] for e in self.endpoints.values()})

    def place(self, endpoint, ranks: int) -> str:
        """Where a schedule endpoint lives: rank r -> ranks[r], "host" -> rank 0's host."""
        if endpoint == "host":
            node = self.endpoints[self.ranks[0]]["node"]
            if node not in self.hosts:
                raise TopologyError(f"topology {self.name!r} has no host memory on node {node}")
            return self.hosts[node]
        if not 0 <= endpoint < min(ranks, len(self.ranks)):
            raise TopologyError(f"topology {self.name!r} has {len(self.ranks)} ranks; "
                                f"rank {endpoint} does not exist")
        return self.ranks[endpoint]

    def route(self, src: str, dst: str) -> list[tuple[int, int]]:
        """Directed hops [(link index, direction)] of a fewest-hops, widest path src -> dst;
        direction 0 is a->b, 1 is b->a."""
        key = (src, dst)
        if key not in self._routes:
            self._routes[key] = self._search(src, dst)
        return self._routes[key]

    def _search(self, src: str, dst: str) -> list[tuple[int, int]]:
        if src == dst:
            return []
        best = {src: (0, float("inf"))}          # node -> (hops, bottleneck bandwidth)
        parent: dict[str, tuple[str, int]] = {}
        queue = deque([src])
        while queue:
            here = queue.popleft()
            hops, width = best[here]
            for there, i in self._adjacent[here]:
                candidate = (hops + 1, min(width, self.links[i].bandwidth))
                known = best.get(there)
                if known is None or (candidate[0] == known[0] and candidate[1] > known[1]):
                    if known is None:
                        queue.append(there)
                    best[there] = candidate
                    parent[there] = (here, i)
        if dst not in parent:
            raise TopologyError(f"topology {self.name!r}: no path from {src} to {dst} "
                                f"(a link is missing)")
        path, node = [], dst
        while node != src:
            prev, i = parent[node]
            path.append((i, 0 if self.links[i].a == prev else 1))
            node = prev
        return path[::-1]


def step_loads(topology: Topology, step, ranks: int):
    """Per transfer: (bytes, hops, latency, receiver endpoint, reduces) for one schedule step."""
    flows = []
    for t in step:
        src, dst = topology.place(t.src, ranks), topology.place(t.dst, ranks)
        if src == dst or t.nbytes == 0:
            continue                                   # a local copy, or nothing to move
        hops = topology.route(src, dst)
        latency = sum(topology.links[i].latency for i, _ in hops)
        flows.append((t.nbytes, hops, latency, dst, t.reduce))
    return flows


def closed_form(topology: Topology, schedule, ranks: int) -> float:
    """Seconds for `schedule` on `topology`: per step latency + busiest link + reduction."""
    total = 0.0
    for step in schedule.steps:
        flows = step_loads(topology, step, ranks)
        if not flows:
            continue
        load: dict[tuple[int, int], float] = {}
        reduced: dict[str, float] = {}
        for nbytes, hops, _, dst, reduces in flows:
            for hop in hops:
                load[hop] = load.get(hop, 0.0) + nbytes
            if reduces:
                reduced[dst] = reduced.get(dst, 0.0) + nbytes
        busiest = max(b / topology.links[i].bandwidth for (i, _), b in load.items())
        total += max(f[2] for f in flows) + busiest + topology.gamma * max(reduced.values(),
                                                                            default=0.0)
    return total
