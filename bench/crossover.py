"""Where two strategies swap places along an axis (node count, message size).

For each pair, the order (faster, tie, slower) is read at every sampled point; where it
changes between two neighbouring samples and the axis is integer (node counts), the exact
point is found by bisection over the integers in between, evaluating the model there
(assuming one change between neighbours, which is what the doubling samples are for).
Points where both take no time at all (one rank: nothing to sum) say nothing about order
and are skipped.
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

TIE = 1e-9          # relative difference below which two times are the same


def order(a: float | None, b: float | None) -> int | None:
    """+1 if a is slower than b, -1 if faster, 0 if level, None if there is nothing to
    compare (a missing point, or both zero)."""
    if a is None or b is None or (a == 0 and b == 0):
        return None
    if abs(a - b) <= TIE * max(abs(a), abs(b)):
        return 0
    return 1 if a > b else -1


def _boundary(state: Callable[[int], int | None], lo: int, hi: int, after: int) -> tuple[int, int]:
    """Narrow (lo, hi) to neighbours: the state at hi is `after`, at lo it is not."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if state(mid) == after:
            hi = mid
        else:
            lo = mid
    return lo, hi


def changes(labels: list[str], points: list, seconds: Callable, exact: bool) -> list[dict]:
    """Every change of order between two labels along `points` (ascending). seconds(label,
    point) -> float or None; with `exact`, points are integers and changes are bisected to
    neighbouring integers."""
    found = []
    for a, b in combinations(labels, 2):
        def state(point, a=a, b=b):
            return order(seconds(a, point), seconds(b, point))
        known = [(p, s) for p in points if (s := state(p)) is not None]
        for (p0, s0), (p1, s1) in zip(known, known[1:]):
            if s0 == s1:
                continue
            lo, hi = _boundary(state, p0, p1, s1) if exact else (p0, p1)
            behind = s1 if s1 else s0           # when level: the one that was behind
            slower, faster = (a, b) if behind > 0 else (b, a)
            found.append({"kind": "crossover", "slower": slower, "faster": faster,
                          "level": s1 == 0, "last": lo, "first": hi, "exact": exact})
    return sorted(found, key=lambda c: (c["first"], c["slower"], c["faster"]))


def sentence(change: dict, unit: Callable[[object], str], where: str) -> str:
    """'ring falls behind blocked above 2 nodes at 100M' (or 'between 1M and 100M')."""
    place = (f"above {unit(change['last'])}" if change["exact"]
             else f"between {unit(change['last'])} and {unit(change['first'])}")
    verb = "draws level with" if change["level"] else "falls behind"
    return f"{change['slower']} {verb} {change['faster']} {place} {where}"
