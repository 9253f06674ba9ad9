"""When a server applies a push, and when it may answer a pull: BSP, quorum, ASP, SSP.

Consistency is only a policy; the server's data path is the same for all. Per block the
server keeps `clocks[w]` (how many pushes worker w has made to it) and `version` (how many
updates it has applied). MPI keeps each worker's messages in order, so a pull that arrives
after a worker's t-th push sees clocks[w] = t.

    policy          a push ...                              a pull by worker w is answered when
    bsp             joins round clocks[w]; round r is       version >= clocks[w]
                    applied (summed) when all W pushed      (its own round has been applied)
    bsp+quorum q    joins round max(clocks[w], version):    version >= clocks[w]
                    a late push goes to the open round;
                    the open round is applied once
                    ceil(q W) pushes are in
    asp             is applied at once                      at once
    ssp, s          is applied at once                      clocks[w] - min(clocks) <= s
                                                            (w is at most s clocks ahead)

So BSP's pull of round t returns exactly the sum of round t; ASP never waits; SSP blocks a
worker that is more than s clocks ahead of the slowest until the slowest catches up.
"""
from __future__ import annotations

import math

import numpy as np


class Round:
    """Gradients pushed into one round, kept per worker and summed in worker order when the
    round is applied, so the result never depends on arrival order (runs are reproducible)."""

    def __init__(self):
        self.pushed: list[tuple[int, object, np.ndarray]] = []    # (worker, rows, grad)

    @property
    def pushes(self) -> int:
        return len(self.pushed)

    @property
    def workers(self) -> set[int]:
        return {w for w, _, _ in self.pushed}

    def add(self, worker: int, rows, grad: np.ndarray) -> None:
        self.pushed.append((worker, rows, grad))

    def gradient(self, height: int):
        """(rows or None for all, summed gradient) of everything pushed into the round."""
        ordered = sorted(self.pushed, key=lambda p: p[0])
        if all(rows is None for _, rows, _ in ordered):
            total = ordered[0][2].copy()
            for _, _, grad in ordered[1:]:
                total += grad
            return None, total
        rows = [np.arange(height) if r is None else r for _, r, _ in ordered]
        grads = [g for _, _, g in ordered]
        unique, where = np.unique(np.concatenate(rows), return_inverse=True)
        summed = np.zeros((len(unique),) + grads[0].shape[1:], dtype=grads[0].dtype)
        np.add.at(summed, where, np.concatenate(grads))
        return unique, summed


class Policy:
    name = "?"
    immediate = False            # apply every push at once (no rounds)

    def __init__(self, workers: int):
        self.workers = workers

    def round_of(self, clocks: np.ndarray, version: int, worker: int) -> int:
        return int(clocks[worker])

    def complete(self, round_: Round) -> bool:
        raise NotImplementedError

    def can_answer(self, clocks: np.ndarray, version: int, worker: int) -> bool:
        return version >= clocks[worker]

    def describe(self) -> str:
        return self.name


class BSP(Policy):
    name = "bsp"

    def complete(self, round_):
        return len(round_.workers) >= self.workers


class Quorum(Policy):
    name = "bsp"

    def __init__(self, workers: int, fraction: float):
        super().__init__(workers)
        if not 0 < fraction <= 1:
            raise ValueError(f"ringps: quorum must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.needed = max(1, math.ceil(fraction * workers - 1e-9))

    def round_of(self, clocks, version, worker):
        return max(int(clocks[worker]), version)

    def complete(self, round_):
        return round_.pushes >= self.needed

    def describe(self):
        return f"bsp, quorum {self.fraction:g} ({self.needed} of {self.workers} pushes)"


class ASP(Policy):
    name = "asp"
    immediate = True

    def can_answer(self, clocks, version, worker):
        return True


class SSP(Policy):
    name = "ssp"
    immediate = True

    def __init__(self, workers: int, staleness: int):
        super().__init__(workers)
        if staleness < 0:
            raise ValueError(f"ringps: staleness must be >= 0, got {staleness}")
        self.staleness = staleness

    def can_answer(self, clocks, version, worker):
        return clocks[worker] - clocks.min() <= self.staleness

    def describe(self):
        return f"ssp, staleness {self.staleness}"


NAMES = ("bsp", "asp", "ssp")


def make_policy(name: str, workers: int, staleness: int = 0,
                quorum: float | None = None) -> Policy:
    if name == "bsp":
        return BSP(workers) if quorum in (None, 1, 1.0) else Quorum(workers, quorum)
    if quorum is not None:
        raise ValueError(f"ringps: quorum applies to bsp only, not {name!r}")
    if name == "asp":
        return ASP(workers)
    if name == "ssp":
        return SSP(workers, staleness)
    raise ValueError(f"ringps: unknown consistency {name!r} (known: {', '.join(NAMES)})")


def spec(name: str, staleness: int = 0, quorum: float | None = None) -> dict:
    """What a worker sends with a key so the server builds the same policy (checked here)."""
    make_policy(name, 1, staleness, quorum)
    return {"consistency": name, "staleness": staleness, "quorum": quorum}
