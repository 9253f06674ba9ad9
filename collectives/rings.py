"""Ring layouts: the rank orders the ring allreduce runs over and the share of the buffer each
one carries (NCCL's channels).

One ring in rank order sends over one outgoing link per rank and leaves every other link
idle. Where the ranks are joined by several independent rings (d2l's DGX-1: a ring of double
NVLinks beside a ring of single ones; any full-duplex network: the same ring run backwards),
the buffer is split across them in proportion to their bandwidth and every ring runs at once,
so a rank sends over all of its links together:

    time ~ 2 (n-1)/n * S / (sum of the rings' bandwidths)    instead of    / (one ring's)

Written as text (RINGPS_RINGS, Communicator(rings=...), bench --rings), rings separated by
commas, each a rank order with an optional weight after a colon:

    "0-1-2-3-4-5-6-7:2,0-3-5-2-4-7-1-6:1"     d2l's two DGX-1 rings, double and single
    "bidirectional"                           rank order and its reverse, equal halves
    "rank-order" (or "")                      the one ring in rank order: the default

Rings must not share a directed edge (rank a sending to rank b): two rings' messages between
one pair would share its tag space and its link, so such a layout is refused. That is why a
2-rank job cannot run "bidirectional" (0->1->0 backwards is 0->1->0 again).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NAMED = ("rank-order", "bidirectional")


class LayoutError(ValueError):
    """A ring layout that cannot run on this many ranks."""


@dataclass(frozen=True)
class RingLayout:
    orders: tuple[tuple[int, ...], ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, text: "str | RingLayout | None", size: int) -> "RingLayout":
        """The layout `text` names (or a RingLayout) for `size` ranks, validated."""
        if isinstance(text, RingLayout):
            text.validate(size)
            return text
        text = (text or "").strip()
        if text in ("", "rank-order"):
            layout = cls((tuple(range(size)),), (1.0,))
        elif text == "bidirectional":
            layout = cls((tuple(range(size)), tuple(reversed(range(size)))), (1.0, 1.0))
        else:
            orders, weights = [], []
            for item in text.split(","):
                order, _, weight = item.strip().partition(":")
                try:
                    orders.append(tuple(int(r) for r in order.split("-")))
                    weights.append(float(weight) if weight else 1.0)
                except ValueError:
                    raise LayoutError(f"ring layout {text!r}: cannot read ring {item.strip()!r} "
                                      f"(want ranks joined by '-', then an optional ':weight'; "
                                      f"or one of {', '.join(NAMED)})") from None
            layout = cls(tuple(orders), tuple(weights))
        layout.validate(size)
        return layout

    def validate(self, size: int) -> None:
        if not self.orders:
            raise LayoutError("a ring layout needs at least one ring")
        if len(self.weights) != len(self.orders):
            raise LayoutError("a ring layout needs one weight per ring")
        everyone = set(range(size))
        edges: dict[tuple[int, int], int] = {}
        for k, (order, weight) in enumerate(zip(self.orders, self.weights), 1):
            if not (math.isfinite(weight) and weight > 0):
                raise LayoutError(f"ring {k}: weight must be a positive number, got {weight}")
            if len(order) != size or set(order) != everyone:
                raise LayoutError(f"ring {k} ({'-'.join(map(str, order))}) must name each of "
                                  f"the {size} ranks 0..{size - 1} exactly once")
            if size < 2:
                continue
            for a, b in zip(order, order[1:] + order[:1]):
                if (a, b) in edges:
                    raise LayoutError(f"rings {edges[a, b]} and {k} both send from rank {a} to "
                                      f"rank {b}: rings must not share a directed edge (their "
                                      f"messages would race on it)")
                edges[a, b] = k

    @property
    def text(self) -> str:
        """The layout as text that reads back to exactly this layout."""
        return ",".join(f"{'-'.join(map(str, o))}:{w:g}" if float(f"{w:g}") == w else
                        f"{'-'.join(map(str, o))}:{w!r}" for o, w in zip(self.orders, self.weights))

    @property
    def is_rank_order(self) -> bool:
        """One ring, in rank order: the plain ring."""
        return len(self.orders) == 1 and self.orders[0] == tuple(range(len(self.orders[0])))

    def bounds(self, count: int) -> list[tuple[int, int]]:
        """[(start, stop)] of the part of a `count`-element buffer each ring carries, in
        proportion to the weights (the same arithmetic, so the same split, on every rank)."""
        total, edges, running = sum(self.weights), [0], 0.0
        for weight in self.weights[:-1]:
            running += weight
            edges.append(min(count, int(count * running / total + 0.5)))
        edges.append(count)
        return list(zip(edges, edges[1:]))
