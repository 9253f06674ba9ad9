"""A topology is endpoints (devices, host memory), switches, and links between them with a
latency alpha and a bandwidth beta per direction; ranks live on endpoints.

Any strategy is priced from its own schedule (collectives/schedule.py): every transfer is
routed over the links, and the closed-form evaluator (alpha-beta-gamma, with LogGP's
per-message overhead o) charges each step

    max over transfers of the path latency                            <- alpha
  + overhead * max over endpoints of (messages it sends + takes)      <- o: a rank posting k
                                             sends pays k, a root or server taking W pays W
  + max over directed links of (bytes crossing it) / (its bandwidth)  <- link sharing, incast
  + gamma * max over receivers of the bytes it must reduce

and sums the steps. On a topology with `cores` (a CPU node whose ranks copy, post and
reduce with its CPUs: the calibrated `local` machine), each of the last three terms is at
least the node's total over its cores:

  overhead * max over nodes of (messages at its endpoints) / cores     <- more ranks than
  max over nodes of (bytes arriving at its endpoints / link) / cores      cores: they take
  gamma * max over nodes of (bytes reduced at its endpoints) / cores      turns

so four ranks that each reduce S on two cores take 2S, while a root reducing 3S alone
still takes 3S. Ranks that take turns lose part of each core to spin-waits and switches:
`cores` is then scaled by `core_share` (fitted by calibrate.py; 1 elsewhere). This applies
only where a node holds more ranks than cores.

Nothing is free because it is simultaneous: n-1 messages posted at once cost one latency,
but n-1 overheads at the endpoint that posts them and at each that takes them. So GPU0's
incast (3 x 160 MB into one PCIe link) and the CPU's extra endpoint fall out of the
schedule and the links, not out of a table of answers.
simulate.py plays the same schedule with max-min fair sharing instead of the bound.
A CompactSchedule (patterns instead of transfers) gets the same answer from compact.py,
without listing its transfers, which is what makes 4096-node clusters quick to price.
Where the links form a tree (tree.py), routes come from walking up to the common ancestor.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .tree import Tree


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
    rings: str = ""                       # the ring layout for all its ranks (rings.py text)
                                          # where the box has several: what `ring` runs on
    overhead: float = 0.0                 # seconds per message at an endpoint (LogGP o + g):
                                          # each send posted and each message taken
    cores: int = 0                        # CPUs per node that do its endpoints' work (shm
                                          # copies, overheads, reductions); 0: each endpoint
                                          # has its own engine (GPUs, DMA, NICs)
    core_share: float = 1.0               # the share of those cores ranks taking turns get
                                          # (spin-waits and switches take the rest; fitted)

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
        if self.rings:
            from collectives.rings import LayoutError, RingLayout
            try:
                RingLayout.parse(self.rings, len(self.ranks))
            except LayoutError as exc:
                raise TopologyError(f"topology {self.name!r}: rings: {exc}") from None
        self._adjacent: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
        for i, link in enumerate(self.links):
            self._adjacent[link.a].append((link.b, i))
            self._adjacent[link.b].append((link.a, i))
        self._routes: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self._tree = self._nodes = self._rank_vertices = self._crowded = None

    @property
    def tree(self) -> Tree | None:
        """The links as a tree (tree.py), or None where they have a cycle."""
        if self._tree is None:
            self._tree = Tree.of(list(self.endpoints) + list(self.switches), self.links) or False
        return self._tree or None

    @property
    def crowded_nodes(self) -> bool:
        """Whether some node holds more ranks than cores: only then do its ranks take turns
        (a node's other endpoints, such as `host`'s buffer, are worked by its ranks)."""
        if self._crowded is None:
            per_node: dict[int, int] = {}
            for end in self.ranks:
                node = self.endpoints[end]["node"]
                per_node[node] = per_node.get(node, 0) + 1
            self._crowded = bool(self.cores) and max(per_node.values(), default=0) > self.cores
        return self._crowded

    @property
    def nodes(self) -> int:
        return len({e["node"] for e in self.endpoints.values()})

    def place(self, endpoint, ranks: int, locations: dict | None = None) -> str:
        """The endpoint a schedule endpoint lives on, when `ranks` ranks are modelled.

        A schedule names ranks (int r: rank r's device) and places of its own; `locations`
        (the schedule's) maps such a name to one of:
            r              rank r's device
            "host"         rank 0's host memory (d2l's CPU aggregator; the default for "host")
            ("host", r)    the host memory of the node rank r lives on
            ("node", j)    the host memory of the j-th node holding modelled ranks (server
                           j beside the workers of node j)
            ("spare", k)   the host memory of the k-th node that holds none of the modelled
                           ranks (a dedicated server machine; model them on a topology with
                           that many more nodes)
        A location can also be used directly as a name ("host", ("host", 4)); `sites`
        gives a schedule's locations with its placement filled in."""
        where = endpoint
        if locations and not isinstance(endpoint, int):
            where = locations.get(endpoint, endpoint)
        if isinstance(where, int):
            if not 0 <= where < min(ranks, len(self.ranks)):
                raise TopologyError(f"topology {self.name!r} has {len(self.ranks)} ranks; "
                                    f"rank {where} does not exist")
            return self.ranks[where]
        if where == "host":
            where = ("host", 0)
        if isinstance(where, tuple) and len(where) == 2 and where[0] == "host":
            node = self.endpoints[self.place(where[1], ranks)]["node"]
            if node not in self.hosts:
                raise TopologyError(f"topology {self.name!r} has no host memory on node {node}")
            return self.hosts[node]
        if isinstance(where, tuple) and len(where) == 2 and where[0] in ("node", "spare"):
            used, spare = self.nodes_of(ranks)
            nodes = used if where[0] == "node" else spare
            if not 0 <= where[1] < len(nodes):
                raise TopologyError(f"topology {self.name!r} has {len(used)} node(s) holding "
                                    f"the {ranks} ranks modelled and {len(spare)} beyond them; "
                                    f"{where[0]} {where[1]} does not exist")
            return self.hosts[nodes[where[1]]]
        raise TopologyError(f"schedule endpoint {endpoint!r} has no location (a rank, 'host', "
                            f"('host', rank), ('node', j) or ('spare', k))")

    def nodes_of(self, ranks: int) -> tuple[list[int], list[int]]:
        """Nodes with host memory that hold some of the first `ranks` ranks, and those that
        hold none (spare), each in order."""
        if self._nodes is None or self._nodes[0] != ranks:
            used = {self.endpoints[end]["node"] for end in self.ranks[:ranks]}
            self._nodes = (ranks, sorted(n for n in self.hosts if n in used),
                           sorted(n for n in self.hosts if n not in used))
        return self._nodes[1], self._nodes[2]

    def route(self, src: str, dst: str) -> list[tuple[int, int]]:
        """Directed hops [(link index, direction)] of a fewest-hops, widest path src -> dst;
        direction 0 is a->b, 1 is b->a."""
        if self.tree is not None:
            return self.tree.route(src, dst)      # the one path; no search, no cache
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


def sites(schedule) -> dict:
    """Where a schedule's named endpoints sit: its `locations`, else the rank its
    `placement` runs them on (a server colocated with rank r sits on rank r's device);
    "host" stays host memory, which is what it names."""
    where = {name: rank for name, rank in schedule.placement.items() if name != "host"}
    where.update(schedule.locations)
    return where


def step_loads(topology: Topology, step, ranks: int, locations: dict | None = None):
    """Per transfer that leaves its endpoint: (bytes, hops, latency, receiver endpoint,
    reduces, sender endpoint) for one schedule step."""
    flows = []
    for t in step:
        src, dst = topology.place(t.src, ranks, locations), topology.place(t.dst, ranks, locations)
        if src == dst or t.nbytes == 0:
            continue                                   # a local copy, or nothing to move
        hops = topology.route(src, dst)
        latency = sum(topology.links[i].latency for i, _ in hops)
        flows.append((t.nbytes, hops, latency, dst, t.reduce, src))
    return flows


def crowded(topology: Topology, per_endpoint: dict[str, float]) -> float:
    """The most any node's endpoints need together, over its cores (0 without a core
    budget): the bound that more ranks than cores put on a term."""
    if not topology.crowded_nodes:
        return 0.0
    nodes: dict[int, float] = {}
    for endpoint, amount in per_endpoint.items():
        node = topology.endpoints[endpoint]["node"]
        nodes[node] = nodes.get(node, 0.0) + amount
    return max(nodes.values(), default=0.0) / (topology.cores * topology.core_share)


def step_work(topology: Topology, flows) -> tuple[dict, dict, dict, dict]:
    """Per directed hop its bytes; per endpoint the messages it posts and takes, the seconds
    of arrivals over its link, and the bytes it reduces."""
    load: dict[tuple[int, int], float] = {}
    reduced: dict[str, float] = {}
    messages: dict[str, float] = {}
    arriving: dict[str, float] = {}
    for nbytes, hops, _, dst, reduces, src in flows:
        for hop in hops:
            load[hop] = load.get(hop, 0.0) + nbytes
        arriving[dst] = arriving.get(dst, 0.0) + nbytes / topology.links[hops[-1][0]].bandwidth
        if reduces:
            reduced[dst] = reduced.get(dst, 0.0) + nbytes
        messages[src] = messages.get(src, 0) + 1
        messages[dst] = messages.get(dst, 0) + 1
    return load, messages, arriving, reduced


def step_time(topology: Topology, step, ranks: int, locations: dict | None = None) -> float:
    """Seconds for one step of transfers: longest path latency + busiest endpoint's message
    overheads + busiest link + reduction (each at least its node's share of cores)."""
    flows = step_loads(topology, step, ranks, locations)
    if not flows:
        return 0.0
    load, messages, arriving, reduced = step_work(topology, flows)
    busiest = max(b / topology.links[i].bandwidth for (i, _), b in load.items())
    return (max(f[2] for f in flows)
            + topology.overhead * max(max(messages.values()), crowded(topology, messages))
            + max(busiest, crowded(topology, arriving))
            + topology.gamma * max(max(reduced.values(), default=0.0),
                                   crowded(topology, reduced)))


def closed_form(topology: Topology, schedule, ranks: int) -> float:
    """Seconds for `schedule` on `topology`: per step latency + message overheads + busiest
    link + reduction.
    A CompactSchedule is priced pattern by pattern (compact.py), to the same answer."""
    if hasattr(schedule, "patterns"):
        from .compact import closed_form_compact
        return closed_form_compact(topology, schedule, ranks)
    where = sites(schedule)
    return sum(step_time(topology, step, ranks, where) for step in schedule.steps)
