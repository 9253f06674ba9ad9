"""A topology whose links form a tree, seen from one root.

Every cluster preset is a tree (GPUs and the host under a PCIe switch, nodes under one
network switch), and on a tree each pair of vertices has exactly one path. Two things that
cost a search over the whole cluster on a general graph become cheap: routing (walk both
ends up to their lowest common ancestor) and pricing a pattern of transfers without listing
its pairs (the link above vertex v carries exactly the transfers with one end inside v's
subtree; compact.py counts them from per-endpoint totals). A topology with a cycle (DGX
NVLink meshes) has no Tree and keeps the breadth-first routing of model.py.
"""
from __future__ import annotations

from collections import deque

import numpy as np


class Tree:
    """Vertices (endpoints and switches) numbered 0..V-1; parent[v] is -1 at the root,
    up[v] the hop (link index, direction) from v to its parent, depth[v] the hops and
    latency[v] the summed link latency from the root."""

    def __init__(self, names: list[str], links, root: str):
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        adjacent: list[list[tuple[int, int]]] = [[] for _ in names]
        for i, link in enumerate(links):
            adjacent[self.index[link.a]].append((self.index[link.b], i))
            adjacent[self.index[link.b]].append((self.index[link.a], i))
        count = len(names)
        self.parent, self.up = [-1] * count, [None] * count
        self.depth, self.latency = [0] * count, [0.0] * count
        seen = [False] * count
        start = self.index[root]
        seen[start] = True
        queue, self.order = deque([start]), []      # order: root first, by depth
        while queue:
            v = queue.popleft()
            self.order.append(v)
            for w, i in adjacent[v]:
                if not seen[w]:
                    seen[w] = True
                    self.parent[w] = v
                    self.up[w] = (i, 0 if links[i].a == names[w] else 1)
                    self.depth[w] = self.depth[v] + 1
                    self.latency[w] = self.latency[v] + links[i].latency
                    queue.append(w)
        self.connected = all(seen)
        self.arrays = None

    def as_arrays(self, links) -> "TreeArrays":
        if self.arrays is None:
            self.arrays = TreeArrays(self, [link.bandwidth for link in links])
        return self.arrays

    @classmethod
    def of(cls, vertices: list[str], links) -> "Tree | None":
        """The tree view of this graph, or None where it has a cycle or is disconnected."""
        if not vertices or len(links) != len(vertices) - 1:
            return None
        tree = cls(vertices, links, vertices[0])
        return tree if tree.connected else None

    def route(self, src: str, dst: str) -> list[tuple[int, int]]:
        """The one path src -> dst as directed hops [(link index, direction)]."""
        a, b = self.index[src], self.index[dst]
        up, down = [], []
        while self.depth[a] > self.depth[b]:
            up.append(self.up[a])
            a = self.parent[a]
        while self.depth[b] > self.depth[a]:
            down.append(self.up[b])
            b = self.parent[b]
        while a != b:
            up.append(self.up[a])
            a = self.parent[a]
            down.append(self.up[b])
            b = self.parent[b]
        return up + [(i, 1 - d) for i, d in reversed(down)]


class TreeArrays:
    """The tree as numpy arrays, for pricing many transfers at once (compact.py). The root
    is its own parent; its `link` is -1."""

    def __init__(self, tree: Tree, bandwidths: list[float]):
        root = tree.order[0]
        self.size = len(tree.names)
        self.parent = np.array([root if p < 0 else p for p in tree.parent], dtype=np.int64)
        self.link = np.array([-1 if u is None else u[0] for u in tree.up], dtype=np.int64)
        self.direction = np.array([0 if u is None else u[1] for u in tree.up], dtype=np.int64)
        self.depth = np.array(tree.depth, dtype=np.int64)
        self.latency = np.array(tree.latency, dtype=np.float64)
        self.hop_bandwidth = np.repeat(np.asarray(bandwidths, dtype=np.float64), 2)  # 2*link+dir

    def ancestors(self, vertices: np.ndarray):
        """(which, ancestor) for every vertex and each of its ancestors, itself included."""
        which, above = [np.arange(len(vertices))], [vertices]
        current, index = vertices, which[0]
        while True:
            keep = self.depth[current] > 0
            if not keep.any():
                break
            current, index = self.parent[current[keep]], index[keep]
            which.append(index)
            above.append(current)
        return np.concatenate(which), np.concatenate(above)

    def paths(self, src: np.ndarray, dst: np.ndarray):
        """Hops of the paths src[i] -> dst[i]: (i, 2*link + direction) per hop, and each
        path's latency."""
        a, b = src.copy(), dst.copy()
        index = np.arange(len(a))
        which, hops = [], []

        def lift(mask, ends, down):
            v = ends[mask]
            which.append(index[mask])
            hops.append(2 * self.link[v] + (1 - self.direction[v] if down else self.direction[v]))
            ends[mask] = self.parent[v]

        while (mask := self.depth[a] > self.depth[b]).any():
            lift(mask, a, False)
        while (mask := self.depth[b] > self.depth[a]).any():
            lift(mask, b, True)
        while (mask := a != b).any():
            lift(mask, a, False)
            lift(mask, b, True)
        latency = self.latency[src] + self.latency[dst] - 2 * self.latency[a]
        empty = np.zeros(0, dtype=np.int64)
        return (np.concatenate(which) if which else empty,
                np.concatenate(hops) if hops else empty, latency)
