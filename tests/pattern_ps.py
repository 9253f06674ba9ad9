"""A parameter server known only by its compact schedule (no runtime), for tests of the
variant hook and of server placement. Registered under a test name, never by default.

`allreduce_pattern(..., servers=k, where=...)`: workers push part j of the buffer to
server j and pull it back. where: "spare" (server j on the k-th extra node), "node" (on
node j's host memory), "colocated" (on rank j's device, said through `placement`).
`hierarchical_pattern`: ring reduce-scatter in each node, local rank j pushes its chunk's
parts to the servers, pull, ring all-gather: groups that share endpoints.
"""
from collectives.partition import chunk_bounds
from collectives.schedule import (CompactSchedule, Exchange, Ring, chunk_nbytes, exchange)


def _servers(k: int, where: str) -> tuple[list, dict, dict]:
    names = [("server", j) for j in range(k)]
    if where == "colocated":
        return names, {name: j for j, name in enumerate(names)}, {}
    return names, {}, {name: (where, j) for j, name in enumerate(names)}


def allreduce_pattern(n, count, itemsize, root=0, servers=1, where="spare"):
    names, placement, locations = _servers(servers, where)
    parts = chunk_nbytes(count, servers, itemsize)
    return CompactSchedule([exchange(range(n), names, parts, "receiver", reduce=True),
                            exchange(names, range(n), parts, "sender")], placement, locations)


def allreduce_schedule(n, count, itemsize, root=0, **variant):
    return allreduce_pattern(n, count, itemsize, root, **variant).expand()


def allreduce_variants(nodes, ranks_per_node):
    return {"test-ps(1 server)": {"servers": 1}, "test-ps(4 servers)": {"servers": 4},
            "test-ps(n servers)": {"servers": nodes}}


def hierarchical_pattern(n, count, itemsize, local, servers, where="spare"):
    nodes = n // local
    names, placement, locations = _servers(servers, where)
    chunks = chunk_nbytes(count, local, itemsize)
    rings = tuple(tuple(range(m * local, (m + 1) * local)) for m in range(nodes))
    pushes = tuple((tuple(m * local + j for m in range(nodes)), tuple(names),
                    tuple(chunk_nbytes(b - a, servers, itemsize)))
                   for j, (a, b) in enumerate(chunk_bounds(count, local)))
    pulls = tuple((names_, workers, sizes) for workers, names_, sizes in pushes)
    return CompactSchedule([Ring(rings, tuple(chunks), local - 1, -1, True),
                            Exchange(pushes, "receiver", True), Exchange(pulls, "sender"),
                            Ring(rings, tuple(chunks), local - 1, 0)], placement, locations)
