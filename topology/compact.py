"""Closed-form price of a CompactSchedule without listing its transfers.

The answer is model.closed_form's for the expanded schedule (per step: longest path latency
+ overhead * most messages at one endpoint + busiest link + gamma * most bytes reduced at one
endpoint, summed), found per pattern
(collectives/schedule.py) in time that grows with the members, not with the pairs or steps:

Exchange, on a tree (tree.py): a pair's path crosses the link above vertex v exactly when
one end is inside v's subtree, so the link's load comes from subtree totals. With bytes
by receiver, up(v) = senders inside x receiver bytes outside and down(v) = senders outside
x receiver bytes inside (by sender, the other way round). The longest pair path is found
at each vertex from its two best children. Not a tree (a DGX's NVLink mesh): the exchange
is expanded and priced transfer by transfer.

Ring: every step moves the same member-to-member transfers; only the chunk each member
sends rotates (step t: member i sends chunk (i + first - t) % m). So each directed link is
crossed by the same members at every step. A link crossed by one member (every link, for a
ring laid out in rank order on a tree) carries that member's chunk, and chunk sizes come in
runs (chunk_bounds gives at most two sizes), so the busiest such link at step t is, over
runs, run size / (the narrowest bandwidth among the members sending that run at t): a
sliding window over the members, read from a sparse table. Links crossed by several
members are summed per step directly.

Together (the rings of a multi-ring layout in lockstep) is expanded and priced step by step:
n transfers per ring per step, which is quick for the boxes such layouts describe. So is any
pattern on a topology with more ranks on a node than cores (the calibrated CPU machine
running more ranks than it has CPUs), whose per-node totals model.step_time adds up.
"""
from __future__ import annotations

import numpy as np

from collectives.schedule import Exchange, Ring, Together

from .model import Topology, sites, step_time

NONE = float("-inf")


def closed_form_compact(topology: Topology, schedule, ranks: int) -> float:
    where = sites(schedule)
    if topology.crowded_nodes:  # per-node totals: a CPU machine's few ranks, step by step
        return sum(_expanded(topology, pattern, ranks, where) for pattern in schedule.patterns)
    return sum(PRICES[type(pattern)](topology, pattern, ranks, where)
               for pattern in schedule.patterns)


def _expanded(topology: Topology, pattern, ranks: int, locations: dict) -> float:
    return sum(step_time(topology, step, ranks, locations) for step in pattern.expand())


# ---- placing many endpoints -----------------------------------------------------------

def _vertices(topology: Topology, names, ranks: int, locations: dict) -> np.ndarray:
    """Tree vertex of each schedule endpoint (ranks looked up all at once)."""
    tree = topology.tree
    try:
        array = np.array(names)
    except ValueError:                                  # names of different shapes
        array = np.zeros(0, dtype=object)
    if array.dtype.kind == "i" and array.ndim == 1:
        if len(array) and (array.min() < 0 or array.max() >= min(ranks, len(topology.ranks))):
            bad = int(array.min() if array.min() < 0 else array.max())
            topology.place(bad, ranks)                  # raises, naming the rank
        if topology._rank_vertices is None:
            topology._rank_vertices = np.array([tree.index[e] for e in topology.ranks],
                                               dtype=np.int64)
        return topology._rank_vertices[array]
    return np.array([tree.index[topology.place(name, ranks, locations)] for name in names],
                    dtype=np.int64)


# ---- Exchange --------------------------------------------------------------------------

def _joined(parts: list[tuple]) -> tuple:
    return parts[0] if len(parts) == 1 else tuple(x for part in parts for x in part)


def _segments(keys: np.ndarray, *columns: np.ndarray, reduce=np.add):
    """Unique keys and, per key, each column reduced over the rows that have it."""
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], [reduce.reduceat(c[order], starts) for c in columns]


def _best_pairs(parents: np.ndarray, s: np.ndarray, d: np.ndarray):
    """Per parent: max over entries i != j of s[i] + d[j] (i, j: its child subtrees)."""
    order = np.lexsort((-s, parents))
    parents, s, d = parents[order], s[order], d[order]
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]])
    s_rest, d_rest = s.copy(), d.copy()
    s_rest[starts] = d_rest[starts] = NONE          # leave out each parent's best sender
    other_s = np.maximum.reduceat(s_rest, starts)
    other_d = np.maximum.reduceat(d_rest, starts)
    return parents[starts], np.maximum(s[starts] + other_d, other_s + d[starts])


def _exchange(topology: Topology, pattern: Exchange, ranks: int, locations: dict) -> float:
    tree = topology.tree
    if tree is None:
        return _expanded(topology, pattern, ranks, locations)
    t = tree.as_arrays(topology.links)
    by_receiver = pattern.by == "receiver"
    groups = len(pattern.groups)
    senders, receivers, sizes = (_joined([g[k] for g in pattern.groups]) for k in range(3))
    sizes = np.array(sizes, dtype=np.float64)
    n_s = np.array([len(g[0]) for g in pattern.groups])
    n_d = np.array([len(g[1]) for g in pattern.groups])
    group = np.concatenate([np.repeat(np.arange(groups), n_s), np.repeat(np.arange(groups), n_d)])
    vertex = np.concatenate([_vertices(topology, senders, ranks, locations),
                             _vertices(topology, receivers, ranks, locations)])
    ones_s, ones_d = np.ones(len(senders)), np.ones(len(receivers))
    zeros_s, zeros_d = np.zeros(len(senders)), np.zeros(len(receivers))
    columns = [np.r_[ones_s, zeros_d],                                   # senders
               np.r_[zeros_s if by_receiver else sizes, zeros_d],        # bytes they send
               np.r_[zeros_s, ones_d],                                   # receivers
               np.r_[zeros_s, sizes if by_receiver else zeros_d],        # bytes they take
               np.r_[np.zeros(len(senders)) if by_receiver else sizes > 0,  # sides with bytes
                     sizes > 0 if by_receiver else np.zeros(len(receivers))]]
    # per (group, endpoint), then per group
    keys, (n_send, sent, n_recv, taken, sized) = _segments(group * t.size + vertex, *columns)
    g, v = keys // t.size, keys % t.size
    totals = [np.bincount(g, weights=c, minlength=groups)
              for c in (n_send, sent, n_recv, taken, sized)]
    # messages at each endpoint: to every sized receiver elsewhere, from every sender elsewhere
    if by_receiver:
        messages = n_send * (totals[4][g] - sized) + sized * (totals[0][g] - n_send)
    else:
        messages = sized * (totals[2][g] - n_recv) + n_recv * (totals[4][g] - sized)
    most_messages = np.bincount(v, weights=messages, minlength=t.size).max(initial=0.0)
    all_send, all_sent = totals[0][g], totals[1][g]
    reduced = 0.0
    if pattern.reduce:                       # from every sender not on this endpoint
        into = taken * (all_send - n_send) if by_receiver else n_recv * (all_sent - sent)
        reduced = np.bincount(v, weights=into, minlength=t.size).max(initial=0.0)
    sends = (n_send > 0) & ((sent > 0) | by_receiver)
    receives = (n_recv > 0) & ((taken > 0) | (not by_receiver))
    reach_s = np.where(sends, t.latency[v], NONE)
    reach_d = np.where(receives, t.latency[v], NONE)
    # every ancestor's subtree totals
    which, above = t.ancestors(v)
    sub_keys, (s_send, s_sent, s_recv, s_taken) = _segments(
        g[which] * t.size + above, n_send[which], sent[which], n_recv[which], taken[which])
    _, (s_reach_s, s_reach_d) = _segments(g[which] * t.size + above, reach_s[which],
                                          reach_d[which], reduce=np.maximum)
    sg, sv = sub_keys // t.size, sub_keys % t.size
    # the longest pair path: children subtrees (and the endpoint itself) of each vertex
    below = t.depth[sv] > 0
    parents = np.r_[sg[below] * t.size + t.parent[sv[below]], keys]
    at, pair = _best_pairs(parents, np.r_[s_reach_s[below], reach_s],
                           np.r_[s_reach_d[below], reach_d])
    latency = (pair - 2 * t.latency[at % t.size]).max(initial=NONE)
    if latency == NONE:
        return 0.0                           # nothing left its endpoint
    # bytes over the link above each vertex, both ways
    sg, sv = sg[below], sv[below]
    s_send, s_sent, s_recv, s_taken = s_send[below], s_sent[below], s_recv[below], s_taken[below]
    if by_receiver:
        up = s_send * (totals[3][sg] - s_taken)
        down = (totals[0][sg] - s_send) * s_taken
    else:
        up = s_sent * (totals[2][sg] - s_recv)
        down = (totals[1][sg] - s_sent) * s_recv
    hop = 2 * t.link[sv] + t.direction[sv]
    load = np.bincount(np.r_[hop, hop ^ 1], weights=np.r_[up, down],
                       minlength=len(t.hop_bandwidth))
    busiest = (load / t.hop_bandwidth).max()
    return float(latency + topology.overhead * most_messages + busiest
                 + topology.gamma * reduced)


# ---- Ring ------------------------------------------------------------------------------

class _WindowMax:
    """Maxima of a circular array over windows [start, start + length): a sparse table over
    the array written twice."""

    def __init__(self, values: np.ndarray):
        self.levels = [np.concatenate([values, values])]

    def __call__(self, starts: np.ndarray, length: int) -> np.ndarray:
        k = length.bit_length() - 1
        while len(self.levels) <= k:
            last, half = self.levels[-1], 1 << (len(self.levels) - 1)
            self.levels.append(np.maximum(last[:-half], last[half:]))
        table = self.levels[k]
        return np.maximum(table[starts], table[starts + length - (1 << k)])


def _runs(chunks: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(first chunk, how many, size) of each run of equal chunk sizes."""
    runs, start = [], 0
    for k in range(1, len(chunks) + 1):
        if k == len(chunks) or chunks[k] != chunks[start]:
            runs.append((start, k - start, chunks[start]))
            start = k
    return runs


def _ring_paths(topology: Topology, pattern: Ring, ranks: int, locations: dict):
    """The ring's transfers that leave their endpoint: member position, hops (2*link +
    direction, with the transfer each belongs to), path latency, receiving and sending
    endpoint (as ids shared by both)."""
    m = len(pattern.chunks)
    names = _joined(list(pattern.groups))
    position = np.tile(np.arange(m), len(pattern.groups))
    following = np.arange(len(names)) - position + (position + 1) % m
    if topology.tree is not None:
        t = topology.tree.as_arrays(topology.links)
        where = _vertices(topology, names, ranks, locations)
        src, dst = where, where[following]
        moving = src != dst
        which, hops, latency = t.paths(src[moving], dst[moving])
        return position[moving], which, hops, latency, dst[moving], src[moving], t.hop_bandwidth
    placed = [topology.place(name, ranks, locations) for name in names]
    moving, which, hops, latency, dst = [], [], [], [], []
    for i, name in enumerate(placed):
        there = placed[following[i]]
        if name == there:
            continue
        path = topology.route(name, there)
        which += [len(moving)] * len(path)
        hops += [2 * link + direction for link, direction in path]
        latency.append(sum(topology.links[link].latency for link, _ in path))
        moving.append(i)
        dst.append(there)
    ids = {name: k for k, name in enumerate(dict.fromkeys(placed))}
    return (position[np.array(moving, dtype=np.int64)], np.array(which, dtype=np.int64),
            np.array(hops, dtype=np.int64), np.array(latency, dtype=np.float64),
            np.array([ids[name] for name in dst], dtype=np.int64),
            np.array([ids[placed[i]] for i in moving], dtype=np.int64),
            np.repeat([link.bandwidth for link in topology.links], 2))


def _shared(keys: np.ndarray, members: np.ndarray):
    """Split members by key: (members of each key crossed once, [members of each key
    crossed by several])."""
    order = np.argsort(keys, kind="stable")
    keys, members = keys[order], members[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    single = starts[counts == 1]
    several = [members[a:a + c] for a, c in zip(starts[counts > 1], counts[counts > 1])]
    return keys[single], members[single], keys[starts[counts > 1]], several


def _ring(topology: Topology, pattern: Ring, ranks: int, locations: dict) -> float:
    m, steps = len(pattern.chunks), pattern.steps
    if steps == 0 or m == 0:
        return 0.0
    position, which, hops, latency, receiver, sender, hop_bandwidth = _ring_paths(
        topology, pattern, ranks, locations)
    if len(position) == 0:
        return 0.0
    narrowest = np.full(m, np.inf)       # per member: narrowest link that only it crosses
    longest = np.full(m, NONE)           # per member: its path latency (NONE: stays local)
    alone = np.zeros(m)                  # per member: 1 if its receiver takes only its chunk
    np.maximum.at(longest, position, latency)
    hop_keys, hop_members, shared_hops, shared_members = _shared(hops, position[which])
    np.minimum.at(narrowest, hop_members, hop_bandwidth[hop_keys])
    shared_into = []
    if pattern.reduce:
        _, into_members, _, shared_into = _shared(receiver, position)
        alone[into_members] = 1.0
    offsets = pattern.first - np.arange(steps)          # step t: member i sends (i + o) % m
    widest, reach, most_into = _WindowMax(-narrowest), _WindowMax(longest), _WindowMax(alone)
    busiest, path, reduced = np.zeros(steps), np.full(steps, NONE), np.zeros(steps)
    for first, length, size in _runs(pattern.chunks):
        starts = (first - offsets) % m                  # members sending this run at step t
        busiest = np.maximum(busiest, size / -widest(starts, length))
        if size:
            path = np.maximum(path, reach(starts, length))
        reduced = np.maximum(reduced, size * most_into(starts, length))
    chunks = np.array(pattern.chunks, dtype=np.float64)
    for key, members in zip(shared_hops, shared_members):
        load = chunks[(members[:, None] + offsets) % m].sum(0)
        busiest = np.maximum(busiest, load / hop_bandwidth[key])
    for members in shared_into:
        reduced = np.maximum(reduced, chunks[(members[:, None] + offsets) % m].sum(0))
    moving = path > NONE
    messages = _ring_messages(pattern.chunks, offsets, position, sender, receiver)
    return float(np.sum((path + topology.overhead * messages + busiest
                         + topology.gamma * reduced)[moving]))


def _ring_messages(chunks, offsets, position, sender, receiver) -> np.ndarray:
    """Per step: the most messages at one endpoint (sent + taken). A member sends at step t
    when its chunk (position + offset) % m has bytes; with every chunk sized that is the same
    at every step."""
    sized = np.array(chunks) > 0

    def most(active):
        return np.bincount(np.r_[sender[active], receiver[active]]).max(initial=0)
    if sized.all():
        return np.full(len(offsets), float(most(np.ones(len(position), bool))))
    m = len(chunks)
    return np.array([float(most(sized[(position + o) % m])) for o in offsets])


PRICES = {Exchange: _exchange, Ring: _ring,
          Together: _expanded}    # several rings at once share no pattern: priced step by step
