"""auto: run whichever algorithm the cost model predicts fastest for this size and rank count.

The model is the `local` topology (calibrated by `make bench` / `python -m bench calibrate`,
a guess before that) priced with the closed-form evaluator over every registered algorithm
that has a schedule. All ranks must pick the same algorithm, so the parameters are rank 0's:
they are shared once per transport (one small exchange) and choices are cached per
(ranks, bytes). The choice and its reason are logged at INFO level ("ringps.auto") and kept
in `last_choice` for bench to print.

Schedule: the chosen algorithm's schedule.
"""
from __future__ import annotations

import logging

import numpy as np

from collectives import ALGORITHMS

log = logging.getLogger("ringps.auto")
NAME = "auto"
_parameters: dict = {}          # id(transport) -> (alpha, beta, gamma, calibrated)
_choices: dict = {}             # (alpha, beta, gamma, ranks, nbytes) -> (name, reason)
last_choice: dict = {}


def candidates() -> list[str]:
    """Every modelled algorithm that runs without server ranks (auto must work in any job)."""
    from collectives.registry import NEED_SERVERS
    from .cost import modelled_algorithms
    return [name for name in modelled_algorithms() if name not in NEED_SERVERS]


def choose(ranks: int, nbytes: int, parameters=None) -> tuple[str, str]:
    """(algorithm, reason) the model prefers for an allreduce of nbytes on ranks."""
    from .calibrate import load_parameters, local_topology
    from .model import closed_form
    if parameters is None:
        p = load_parameters()
        parameters = (p["alpha"], p["beta"], p["gamma"], p["calibrated"])
    alpha, beta, gamma, calibrated = parameters
    key = (alpha, beta, gamma, ranks, nbytes)
    if key not in _choices:
        topology = local_topology(max(ranks, 1), alpha, beta, gamma)
        predicted = {name: closed_form(topology, ALGORITHMS.schedule(name, ranks, nbytes, 1), ranks)
                     for name in candidates()}
        best = min(predicted, key=lambda name: (predicted[name], name))
        others = ", ".join(f"{n} {t * 1e3:.3g}" for n, t in sorted(predicted.items(),
                                                                   key=lambda kv: kv[1]))
        reason = (f"{best} predicted fastest for {nbytes} bytes on {ranks} ranks (ms: {others}; "
                  f"{'calibrated' if calibrated else 'uncalibrated'} local model)")
        _choices[key] = (best, reason)
    return _choices[key]


def _agreed_parameters(transport) -> tuple:
    """Rank 0's model parameters, shared with every rank once per transport."""
    key = id(transport)
    if key not in _parameters:
        from .calibrate import load_parameters
        p = load_parameters()
        mine = np.array([p["alpha"], p["beta"], p["gamma"], float(p["calibrated"])])
        table = transport.exchange(mine.view(np.int64)).view(np.float64)
        alpha, beta, gamma, calibrated = table[0]
        _parameters[key] = (float(alpha), float(beta), float(gamma), bool(calibrated))
    return _parameters[key]


def allreduce(x: np.ndarray, ctx) -> None:
    name, reason = choose(ctx.size, x.nbytes, _agreed_parameters(ctx.transport))
    last_choice.update(algorithm=name, reason=reason)
    log.info("auto: %s", reason)
    ALGORITHMS.function(name)(x, ctx)


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0):
    name, _ = choose(n, count * itemsize)
    return ALGORITHMS.schedule(name, n, count, itemsize, root)
