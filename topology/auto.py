"""auto: run whichever algorithm the cost model predicts fastest for this size and rank count.

The model is the `local` topology (calibrated by `make bench` / `python -m bench calibrate`,
a guess before that) priced with the closed-form evaluator over every registered algorithm
that has a schedule and needs no server ranks (a new algorithm joins as soon as it is
registered with an `allreduce_pattern` or `allreduce_schedule`). Each candidate's time is
split into the model's terms, read off its own schedule (calibrate.coefficients):

    latency   alpha    x  steps (path latencies in sequence)
    overhead  o        x  messages at the busiest endpoint, summed over steps
    bytes     1/beta   x  bytes over the busiest link, summed over steps
    reduce    gamma    x  bytes reduced at the busiest endpoint, summed over steps
    board     board    x  1 for a call that runs whole on the shared-memory board (a oneshot
                          of up to 256 KB: calibrate.on_board), instead of its latency and
                          overhead; times ranks / (cores x share) where they outnumber cores
    memory    1/mu     x  bytes the busiest rank's memory reads and writes on the shared-
                          memory transport (Schedule.memory), mu the memory bandwidth

where, with more ranks than the calibration's cores, "the busiest endpoint" of a step is at
least all endpoints' total over the cores (model.py): ranks that all work take turns. The
board term is in the model only where the transport has a board (every rank on one node,
the C part built) and the parameters carry one; the memory term where the parameters carry
one (a calibration of this machine).

and the reason for a choice names the winner's and the runner-up's terms, so a pick can be
traced to lines of their schedules. All ranks must pick the same algorithm, so the
parameters are rank 0's: they are shared once per transport (one small exchange) and choices
are cached per (ranks, bytes). Rank 0 logs the choice and its reason at INFO level
("ringps.auto") once per (ranks, size class: the power of two at or above the size); the
torch backend shows them under RINGPS_DEBUG=info. The last choice is kept in `last_choice`
for bench to print.

Schedule: the chosen algorithm's schedule.
"""
from __future__ import annotations

import logging
import weakref

import numpy as np

from collectives import ALGORITHMS

log = logging.getLogger("ringps.auto")
NAME = "auto"
TERMS = ("latency", "bytes", "reduce", "overhead", "board", "memory")  # coefficients' order
_parameters = weakref.WeakKeyDictionary()   # transport -> ((alpha, beta, gamma, overhead,
                                             #   calibrated, cores, core_share), picks:
                                             #   {(nbytes, itemsize): (name, reason)})
_choices: dict = {}             # (parameters, ranks, nbytes, itemsize) -> (name, reason)
_logged: set = set()            # (ranks, size class) already logged
last_choice: dict = {}


def candidates() -> list[str]:
    """Every modelled algorithm that runs without server ranks (auto must work in any job)."""
    from collectives.registry import NEED_SERVERS
    from .cost import modelled_algorithms
    return [name for name in modelled_algorithms() if name not in NEED_SERVERS]


def stored_parameters() -> tuple:
    from .calibrate import load_parameters
    p = load_parameters()
    return (p["alpha"], p["beta"], p["gamma"], p["overhead"], p["calibrated"], p["cores"],
            p["core_share"], p["board"], p["memory_bandwidth"])


def core_budget(parameters: tuple) -> tuple[int, float]:
    """The core budget in a parameter tuple and the share of it ranks taking turns get
    ((0, 1.0), no budget, where it has none)."""
    return (int(parameters[5]) if len(parameters) > 5 else 0,
            float(parameters[6]) if len(parameters) > 6 else 1.0)


def board_term(parameters: tuple) -> float | None:
    """Seconds per board post in a parameter tuple, or None where it has none (no board)."""
    return float(parameters[7]) if len(parameters) > 7 and parameters[7] >= 0 else None


def predictions(ranks: int, nbytes: int, parameters: tuple,
                itemsize: int = 4) -> dict[str, dict[str, float]]:
    """{algorithm: {term: seconds}} on the local model with these parameters (alpha, beta,
    gamma, overhead, calibrated[, cores[, core_share[, board]]]), for nbytes of
    `itemsize`-byte elements (which decides how many chunks have bytes at all)."""
    from .calibrate import coefficients
    alpha, beta, gamma, overhead = parameters[:4]
    board = board_term(parameters)
    memory = float(parameters[8]) if len(parameters) > 8 else None
    terms = np.array([alpha, 1 / beta, gamma, overhead] + ([board] if board is not None else [])
                     + ([1 / memory] if memory is not None else []))
    names = TERMS[:4] + (("board",) if board is not None else ()) + \
        (("memory",) if memory is not None else ())
    cores, share = core_budget(parameters)
    return {name: dict(zip(names, coefficients(name, ranks, nbytes, itemsize=itemsize,
                                               cores=cores, core_share=share,
                                               board=board is not None,
                                               memory=memory is not None) * terms))
            for name in candidates()}


def _terms(name: str, parts: dict[str, float]) -> str:
    said = " + ".join(f"{term} {parts[term] * 1e3:.3g}" for term in TERMS
                      if parts.get(term, 0) > 0)
    return f"{name} {sum(parts.values()) * 1e3:.3g} ms ({said or 'nothing to move'})"


def choose(ranks: int, nbytes: int, parameters=None, itemsize: int = 4) -> tuple[str, str]:
    """(algorithm, reason) the model prefers for an allreduce of nbytes on ranks."""
    parameters = stored_parameters() if parameters is None else parameters
    key = (*parameters[:4], *core_budget(parameters), board_term(parameters),
           tuple(parameters[8:9]), ranks, nbytes, itemsize)
    if key not in _choices:
        predicted = predictions(ranks, nbytes, parameters, itemsize)
        total = {name: sum(parts.values()) for name, parts in predicted.items()}
        ranked = sorted(total, key=lambda name: (total[name], name))
        best = ranked[0]
        beside = f"; next {_terms(ranked[1], predicted[ranked[1]])}" if len(ranked) > 1 else ""
        rest = ", ".join(f"{n} {total[n] * 1e3:.3g}" for n in ranked[2:])
        reason = (f"{_terms(best, predicted[best])} predicted fastest for {nbytes} bytes on "
                  f"{ranks} ranks{beside}{f'; then (ms) {rest}' if rest else ''} "
                  f"[{'calibrated' if parameters[4] else 'uncalibrated'} local model]")
        _choices[key] = (best, reason)
    return _choices[key]


def _agreed_parameters(transport) -> tuple:
    """Rank 0's model parameters, shared with every rank once per transport (held weakly,
    keyed by the transport itself); without a board there (ranks on several nodes, or the C
    part not built) the board term is left out, so oneshot is priced as its schedule says."""
    key = transport         # not id(): a new transport at a dead one's address would skip
    if key not in _parameters:      # the exchange on some ranks only, and the job would hang
        # a 5-tuple: no core budget, no board, no memory term (its bandwidth infinite)
        mine = np.array([0, 0, 0, 0, 0, 0, 1.0, -1.0, 1e30])
        stored = [float(v) for v in stored_parameters()]
        mine[:len(stored)] = stored
        if getattr(transport, "board", None) is None:
            mine[7] = -1.0
        table = transport.exchange(mine.view(np.int64)).view(np.float64)
        alpha, beta, gamma, overhead, calibrated, cores, share, board, memory = table[0]
        _parameters[key] = ((float(alpha), float(beta), float(gamma), float(overhead),
                             bool(calibrated), int(cores), float(share), float(board),
                             float(memory)), {})
    return _parameters[key][0]


def size_class(nbytes: int) -> int:
    """The power of two at or above nbytes: choices are logged once per class."""
    return 1 << max(int(nbytes) - 1, 0).bit_length()


def _pick(parameters: tuple, ranks: int, rank: int, nbytes: int, itemsize: int) -> str:
    """The choice, recorded in last_choice and logged by rank 0 once per size class."""
    name, reason = choose(ranks, nbytes, parameters, itemsize)
    last_choice.update(algorithm=name, reason=reason)
    seen = (ranks, size_class(nbytes))
    if rank == 0 and seen not in _logged:
        _logged.add(seen)
        log.info("auto allreduce, %d ranks, up to %d bytes: %s", ranks, seen[1], reason)
    return name


def agreed_pick(transport, ranks: int, rank: int, nbytes: int, itemsize: int) -> str | None:
    """What `allreduce` would run on this transport, with no exchange (the board's fast
    path): None until the parameters have been agreed there by a call on the general path."""
    agreed = _parameters.get(transport)
    if agreed is None:
        return None
    parameters, picks = agreed
    choice = picks.get((nbytes, itemsize))
    if choice is None:
        name = _pick(parameters, ranks, rank, nbytes, itemsize)
        choice = picks[(nbytes, itemsize)] = (name, last_choice["reason"])
    elif last_choice.get("reason") is not choice[1]:
        last_choice.update(algorithm=choice[0], reason=choice[1])
    return choice[0]


def allreduce(x: np.ndarray, ctx) -> None:
    name = _pick(_agreed_parameters(ctx.transport), ctx.size, ctx.rank, x.nbytes, x.itemsize)
    ALGORITHMS.function(name)(x, ctx)


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0):
    name, _ = choose(n, count * itemsize, itemsize=itemsize)
    return ALGORITHMS.schedule(name, n, count, itemsize, root)
