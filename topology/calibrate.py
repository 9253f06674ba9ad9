"""Calibrate the `local` topology from what bench measured on this machine.

On one host every rank reaches every other through memory: the `local` topology is a star of
rank endpoints around one "memory" switch with per-rank bandwidth beta and latency alpha, and
reductions cost gamma seconds per byte. Under the closed-form evaluator an algorithm's time
is linear in (alpha, 1/beta, gamma), with coefficients read off its own schedule, so fitting
the three to bench's measured allreduce rows is a least-squares problem (non-negative,
relative error). The fit is written to a JSON file that `preset("local")` loads.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cost import modelled_algorithms
from .model import Link, Topology, TopologyError, closed_form

HUGE = 1e30
DEFAULT = {"alpha": 20e-6, "beta": 2e9, "gamma": 0.2e-9}     # a guess until bench calibrates


def local_topology(ranks: int, alpha: float, beta: float, gamma: float) -> Topology:
    endpoints = {f"rank{r}": {"kind": "cpu", "node": 0} for r in range(ranks)}
    links = [Link(f"rank{r}", "memory", beta, alpha / 2, "memory") for r in range(ranks)]
    return Topology("local", endpoints, ["memory"], links, list(endpoints), {0: "rank0"}, gamma,
                    source=f"this machine, calibrated: alpha {alpha * 1e6:.2f} us, beta "
                           f"{beta / 1e9:.2f} GB/s, gamma {gamma * 1e9:.3f} ns/B")


def coefficients(algo: str, ranks: int, nbytes: int, collective: str = "allreduce") -> np.ndarray:
    """(a, b, c) with closed-form time = a*alpha + b/beta + c*gamma for this algorithm."""
    from collectives import COLLECTIVES
    schedule = COLLECTIVES[collective].schedule(algo, ranks, nbytes // 4, 4)
    unit = [local_topology(ranks, 1.0, HUGE, 0.0), local_topology(ranks, 0.0, 1.0, 0.0),
            local_topology(ranks, 0.0, HUGE, 1.0)]
    return np.array([closed_form(t, schedule, ranks) for t in unit])


def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with x >= 0 for a handful of unknowns (drop negatives, refit)."""
    free = list(range(A.shape[1]))
    while True:
        x = np.zeros(A.shape[1])
        if free:
            x[free] = np.linalg.lstsq(A[:, free], y, rcond=None)[0]
        negative = [i for i in free if x[i] < 0]
        if not negative:
            return x
        free.remove(min(negative, key=lambda i: x[i]))


@dataclass
class Calibration:
    alpha: float
    beta: float
    gamma: float
    errors: dict            # algo (or collective/algo) -> median relative error of the fit
    points: int

    def topology(self, ranks: int) -> Topology:
        return local_topology(ranks, self.alpha, self.beta, self.gamma)

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "errors": self.errors, "points": self.points}


def usable_rows(rows: list[dict]) -> list[dict]:
    """Measured rows of ringps's own algorithms on 2+ ranks: not the baselines, not `auto`,
    which is whichever of the others it picked, and not the PS strategies, whose servers
    live on ranks the `local` topology does not describe."""
    from collectives import COLLECTIVES, NEED_SERVERS
    known = set(modelled_algorithms()) - set(NEED_SERVERS)
    return [r for r in rows if r.get("collective", "allreduce") in COLLECTIVES
            and r["algo"] in COLLECTIVES[r.get("collective", "allreduce")]
            and (r.get("collective", "allreduce") != "allreduce" or r["algo"] in known)
            and int(r["ranks"]) > 1 and float(r["time_us"]) > 0 and int(r["bytes"]) > 0]


def fit(rows: list[dict]) -> Calibration:
    """Fit alpha, beta, gamma to measured rows (bench CSV/JSON rows of any collective).

    Every allreduce reduces a fixed share of what it moves, so allreduce rows alone cannot
    tell 1/beta from gamma; rows without reductions (broadcast, allgather) separate them.
    Without such rows gamma is left at 0 and beta absorbs the reduction cost."""
    usable = usable_rows(rows)
    if len(usable) < 3:
        raise TopologyError(f"calibration needs at least 3 measured rows of ringps algorithms "
                            f"on 2+ ranks; got {len(usable)}")
    A = np.array([coefficients(r["algo"], int(r["ranks"]), int(r["bytes"]),
                               r.get("collective", "allreduce")) for r in usable])
    y = np.array([float(r["time_us"]) * 1e-6 for r in usable])
    weighted = A / y[:, None]                             # minimise relative error
    if np.linalg.matrix_rank(weighted, tol=1e-9 * np.abs(weighted).max()) < 3:
        x = np.zeros(3)
        x[:2] = _nnls(weighted[:, :2], np.ones_like(y))
    else:
        x = _nnls(weighted, np.ones_like(y))
    alpha, inverse_beta, gamma = x
    predicted = A @ x
    errors: dict[str, float] = {}
    for key in sorted({_label(r) for r in usable}):
        mine = [i for i, r in enumerate(usable) if _label(r) == key]
        errors[key] = float(np.median(np.abs(predicted[mine] - y[mine]) / y[mine]))
    return Calibration(float(alpha), 1.0 / inverse_beta if inverse_beta > 0 else HUGE,
                       float(gamma), errors, len(usable))


def _label(row: dict) -> str:
    collective = row.get("collective", "allreduce")
    return row["algo"] if collective == "allreduce" else f"{collective}/{row['algo']}"


def read_rows(folder: str | Path) -> list[dict]:
    """Measured rows of every bench CSV in `folder` (rows without a time, such as a suite's
    own calibration.csv of model points, are not measurements)."""
    rows = []
    for path in sorted(Path(folder).glob("*.csv")):
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if r.get("time_us")]
    if not rows:
        raise TopologyError(f"no bench CSV files in {folder}")
    return rows


def store_path() -> Path:
    if os.environ.get("RINGPS_LOCAL_TOPOLOGY"):
        return Path(os.environ["RINGPS_LOCAL_TOPOLOGY"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ringps" / "local.json"


def save(calibration: Calibration, path: Path | None = None) -> Path:
    path = path or store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n")
    tmp.replace(path)
    return path


def load_parameters() -> dict:
    """The stored calibration, or DEFAULT (with "calibrated": False) if bench has not run."""
    path = store_path()
    try:
        data = json.loads(path.read_text())
        return {"alpha": float(data["alpha"]), "beta": float(data["beta"]),
                "gamma": float(data["gamma"]), "calibrated": True, "path": str(path)}
    except (OSError, ValueError, KeyError):
        return {**DEFAULT, "calibrated": False, "path": str(path)}
