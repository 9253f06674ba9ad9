"""Calibrate the `local` topology from what bench measured on this machine.

On one host every rank reaches every other through memory: the `local` topology is a star of
rank endpoints (and the host-memory buffer `host` aggregates in, which rank 0 copies its own
gradient into and back out of) around one "memory" switch with per-rank bandwidth beta and
latency alpha, every message costs its endpoints `overhead` seconds (LogGP's o), and
reductions cost gamma seconds per byte. The ranks share the machine's `cores` CPUs (from
the run's environment), so a step where every rank copies and reduces costs at least the
total over the cores (model.py): that is what makes 4 ranks on 2 cores favour one busy root
over four busy peers. Ranks taking turns lose some of each core to spin-waits and switches,
so the share of the cores they get (`core_share`, 1 = all) is fitted too: of SHARES, the
one whose fit puts the fewest pairs of strategies measured in the same cell in the wrong
order (pairs more than ORDER_MARGIN apart; what `auto` needs of the model), then the one
with the least error. Under the closed-form evaluator an algorithm's time
is linear in (alpha, 1/beta, gamma, overhead), with coefficients read off its own schedule;
a small oneshot runs whole on the shared-memory board in one C call, so instead of alpha and
overheads it costs one `board` post (times the turns ranks take when they outnumber the
cores), a fifth term. On one node every byte that crosses between ranks is also copied in
memory, as often as the transport's protocol says (Schedule.memory), so the busiest rank's
memory traffic over a memory bandwidth is a sixth. Fitting the six to bench's measured rows is a least-squares problem (non-negative,
relative error). The fit says how good it is (median and worst error per algorithm and size
band, against TARGETS) and is written to a JSON file that `preset("local")` and `auto` load: store_path(), or the
file `bench calibrate --out` names.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cost import modelled_algorithms, schedule_for
from .model import Link, Topology, TopologyError, closed_form

HUGE = 1e30
DEFAULT = {"alpha": 20e-6, "beta": 2e9, "gamma": 0.2e-9,      # a guess until bench calibrates
           "overhead": 5e-6, "board": 3e-6, "memory_bandwidth": HUGE}
BANDS = (("< 64K", 0, 1 << 16), (">= 64K", 1 << 16, float("inf")))    # message sizes
TARGETS = {"< 64K": 0.50, ">= 64K": 0.25}     # the error a calibration should stay within
SHARES = tuple(round(1.0 - 0.05 * k, 2) for k in range(13))     # core_share tried: 1 .. 0.4
ORDER_MARGIN = 0.10     # measured this much apart, two strategies' order is the machine's


def local_topology(ranks: int, alpha: float, beta: float, gamma: float,
                   overhead: float = 0.0, cores: int = 0, core_share: float = 1.0) -> Topology:
    endpoints = {f"rank{r}": {"kind": "cpu", "node": 0} for r in range(ranks)}
    names = list(endpoints)
    endpoints["host"] = {"kind": "cpu", "node": 0}     # a buffer of its own: `host` copies in
    links = [Link(end, "memory", beta, alpha / 2, "memory") for end in endpoints]
    return Topology("local", endpoints, ["memory"], links, names, {0: "host"}, gamma,
                    source=f"this machine, calibrated: alpha {alpha * 1e6:.2f} us, beta "
                           f"{beta / 1e9:.2f} GB/s, gamma {gamma * 1e9:.3f} ns/B, overhead "
                           f"{overhead * 1e6:.2f} us per message"
                           + (f", {cores} cores ({core_share:.0%} of them when ranks take "
                              f"turns)" if cores else ""),
                    overhead=overhead, cores=cores, core_share=core_share)


def machine_cores() -> int:
    """CPUs this process may run on (what its ranks share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _unit_topologies(ranks: int, cores: int, share: float) -> list[Topology]:
    """One topology per fitted term with that term 1 and the others 0 (bandwidth: 1/beta)."""
    return [local_topology(ranks, 1.0, HUGE, 0.0, 0.0, cores, share),
            local_topology(ranks, 0.0, 1.0, 0.0, 0.0, cores, share),
            local_topology(ranks, 0.0, HUGE, 1.0, 0.0, cores, share),
            local_topology(ranks, 0.0, HUGE, 0.0, 1.0, cores, share)]


def on_board(algo: str, ranks: int, nbytes: int, itemsize: int = 4,
             collective: str = "allreduce") -> bool:
    """Whether this call runs whole on the shared-memory board (transport/board.py) when
    every rank shares the node: a oneshot allreduce of up to board.CAPACITY bytes, of a
    dtype with a C kernel (1-, 4- and 8-byte items: int8/uint8, float32/int32,
    float64/int64; 2-byte float16/bfloat16 take the Python path)."""
    from collectives.transport import board
    return (collective == "allreduce" and algo == "oneshot" and ranks > 1
            and nbytes <= board.CAPACITY and itemsize in (1, 4, 8))


def turns(ranks: int, cores: int, core_share: float) -> float:
    """How many times over one core each rank waits for the others' turn: ranks over the
    cores they get where they outnumber them, else 1."""
    return ranks / (cores * core_share) if cores and ranks > cores else 1.0


def coefficients(algo: str, ranks: int, nbytes: int, collective: str = "allreduce",
                 itemsize: int = 4, cores: int = 0, core_share: float = 1.0,
                 board: bool = False, memory: bool = False) -> np.ndarray:
    """(a, b, c, d) with closed-form time = a*alpha + b/beta + c*gamma + d*overhead for this
    algorithm on nbytes of `itemsize`-byte elements, its ranks sharing `cores` CPUs (0: as
    many as they need; `core_share` of them when they take turns): its own schedule priced
    once per term (each term's price is linear in it, the core bound included).

    board=True: the local machine's board is in the model, and a fifth coefficient e prices
    it (time += e*board). A call that runs on the board (on_board) is one post: no alpha and
    no per-message overhead (a = d = 0), e = turns(ranks, cores, core_share); its bytes and
    reductions are its schedule's, as on the Python path. Every other call: e = 0.

    memory=True: one more coefficient m, the memory traffic of the call (memory_traffic:
    bytes the busiest rank reads and writes on the shared-memory transport), priced at the
    machine's memory bandwidth (time += m / memory_bandwidth). On one node every byte that
    crosses between ranks is also copied in memory, and the transport's protocol decides how
    often: `blocked` stages one copy per all-gather step, `ring` and `rhd` one per send,
    though all three put the same bytes on the links."""
    from collectives import COLLECTIVES
    count = nbytes // itemsize
    if collective == "allreduce":
        schedule = schedule_for(algo, ranks, count, itemsize)
    else:
        schedule = COLLECTIVES[collective].schedule(algo, ranks, count, itemsize)
    terms = [closed_form(t, schedule, ranks) for t in _unit_topologies(ranks, cores, core_share)]
    if board:
        if on_board(algo, ranks, nbytes, itemsize, collective):
            terms = [0.0, terms[1], terms[2], 0.0, turns(ranks, cores, core_share)]
        else:
            terms.append(0.0)
    if memory:
        terms.append(memory_traffic(schedule, ranks, cores, core_share))
    return np.array(terms)


def memory_traffic(schedule, ranks: int, cores: int = 0, core_share: float = 1.0) -> float:
    """Bytes read plus written per call by the busiest rank's memory on the shared-memory
    transport (Schedule.memory's table), or, where ranks outnumber the cores, the node's
    total over the cores they get."""
    if hasattr(schedule, "expand"):
        schedule = schedule.expand()
    per_rank = [sum(schedule.memory(r)) for r in range(ranks)]
    busiest = float(max(per_rank, default=0))
    if cores and ranks > cores:
        return max(busiest, sum(per_rank) / (cores * core_share))
    return busiest


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
    overhead: float
    errors: dict            # label -> band -> {"median", "worst", "points"}: relative errors
    points: int
    cores: int = 0          # CPUs the measured ranks shared (0: not bounded)
    core_share: float = 1.0  # the share of them ranks taking turns got (fitted)
    board: float = 0.0      # seconds per board post (a small oneshot, all ranks on one node)
    memory_bandwidth: float = HUGE   # bytes/s of memory traffic (read + written) per rank

    def topology(self, ranks: int) -> Topology:
        return local_topology(ranks, self.alpha, self.beta, self.gamma, self.overhead,
                              self.cores, self.core_share)

    def terms(self) -> np.ndarray:
        """The fitted terms in the order of `coefficients(..., board=True, memory=True)`."""
        return np.array([self.alpha, 1 / self.beta, self.gamma, self.overhead, self.board,
                         1 / self.memory_bandwidth])

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
                "overhead": self.overhead, "board": self.board,
                "memory_bandwidth": self.memory_bandwidth, "cores": self.cores,
                "core_share": self.core_share, "errors": self.errors, "points": self.points}

    def parameters(self) -> tuple:
        """What auto.choose takes: (alpha, beta, gamma, overhead, calibrated, cores,
        core_share, board, memory_bandwidth)."""
        return (self.alpha, self.beta, self.gamma, self.overhead, True, self.cores,
                self.core_share, self.board, self.memory_bandwidth)


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


def fit(rows: list[dict], cores: int | None = None) -> Calibration:
    """Fit alpha, beta, gamma and the per-message overhead to measured rows (bench CSV/JSON
    rows of any collective) taken on a machine with `cores` CPUs (default: this one),
    minimising the relative error.

    Every allreduce reduces a fixed share of what it moves, so allreduce rows alone cannot
    tell 1/beta from gamma; rows without reductions (broadcast, allgather) separate them.
    Without such rows gamma is left at 0 and beta absorbs the reduction cost. Alpha and the
    overhead separate because strategies post different numbers of messages per step. Where
    rows had more ranks than cores, each of SHARES is tried as core_share (the four terms
    are linear for each) and the one kept whose fit misorders the fewest pairs of allreduce
    strategies measured in one cell (misordered), then the one with the least squared
    relative error."""
    usable = usable_rows(rows)
    if len(usable) < 4:
        raise TopologyError(f"calibration needs at least 4 measured rows of ringps algorithms "
                            f"on 2+ ranks; got {len(usable)}")
    cores = machine_cores() if cores is None else int(cores)
    y = np.array([float(r["time_us"]) * 1e-6 for r in usable])
    crowded = cores and any(int(r["ranks"]) > cores for r in usable)
    best = None
    for share in SHARES if crowded else (1.0,):
        A = np.array([coefficients(r["algo"], int(r["ranks"]), int(r["bytes"]),
                                   r.get("collective", "allreduce"), _itemsize(r), cores=cores,
                                   core_share=share, board=True, memory=True)
                      for r in usable])
        x = _fit_terms(A / y[:, None])                    # minimise relative error
        predicted = A @ x
        score = (misordered(usable, predicted, y), float(np.sum((predicted / y - 1.0) ** 2)))
        if best is None or score < best[0]:
            best = (score, share, A, x)
    _, share, A, x = best
    alpha, inverse_beta, gamma, overhead, board, inverse_memory = x
    return Calibration(float(alpha), 1.0 / inverse_beta if inverse_beta > 0 else HUGE,
                       float(gamma), float(overhead), _errors(usable, A @ x, y), len(usable),
                       cores, share, float(board),
                       1.0 / inverse_memory if inverse_memory > 0 else HUGE)


_ITEMSIZES = {"int8": 1, "uint8": 1, "float16": 2, "bfloat16": 2, "float32": 4, "int32": 4,
              "float64": 8, "int64": 8}


def _itemsize(row: dict) -> int:
    """Bytes per element of a bench row (its `dtype` column; float32 where it has none)."""
    return _ITEMSIZES.get(row.get("dtype") or "float32", 4)


def misordered(rows: list[dict], predicted: np.ndarray, measured: np.ndarray) -> int:
    """Pairs of allreduce rows of one (ranks, bytes) cell that the machine ordered by more
    than ORDER_MARGIN (a measured faster than b by that much) and the model did not (it has
    a no faster than b)."""
    cells: dict = {}
    for i, r in enumerate(rows):
        if r.get("collective", "allreduce") == "allreduce":
            cells.setdefault((int(r["ranks"]), int(r["bytes"])), []).append(i)
    return sum(1 for cell in cells.values() for a in cell for b in cell
               if measured[a] * (1 + ORDER_MARGIN) < measured[b]
               and predicted[a] >= predicted[b])


def _fit_terms(weighted: np.ndarray) -> np.ndarray:
    """Non-negative (alpha, 1/beta, gamma, overhead[, board[, 1/memory bandwidth]]) with
    weighted @ x nearest all ones; terms the rows cannot tell apart stay 0 (board: no row
    ran on the board)."""
    tol = 1e-9 * np.abs(weighted).max()
    x = np.zeros(weighted.shape[1])
    free = [i for i in range(weighted.shape[1]) if i < 4 or weighted[:, i].any()]
    if np.linalg.matrix_rank(weighted[:, free], tol=tol) < len(free):
        free.remove(2)                                    # gamma: not identifiable here
    if np.linalg.matrix_rank(weighted[:, free], tol=tol) < len(free):
        free.remove(3)                                    # one kind of step: no overhead
    x[free] = _nnls(weighted[:, free], np.ones(len(weighted)))
    return x


def band_of(nbytes: int) -> str:
    return next(name for name, low, high in BANDS if low <= nbytes < high)


def _errors(usable: list[dict], predicted: np.ndarray, measured: np.ndarray) -> dict:
    """Per label and size band: median and worst relative error of the model, and points."""
    errors: dict = {}
    relative = np.abs(predicted - measured) / measured
    for key in sorted({_label(r) for r in usable}):
        for band, _, _ in BANDS:
            mine = [i for i, r in enumerate(usable)
                    if _label(r) == key and band_of(int(r["bytes"])) == band]
            if mine:
                errors.setdefault(key, {})[band] = {
                    "median": float(np.median(relative[mine])),
                    "worst": float(relative[mine].max()), "points": len(mine)}
    return errors


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


def measured_cores(folder: str | Path) -> int | None:
    """The cores of the machine a results folder was measured on (its results.json's
    environment), or None where it does not say."""
    try:
        return int(json.loads((Path(folder) / "results.json").read_text())
                   ["environment"]["cores"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store_path() -> Path:
    if os.environ.get("RINGPS_LOCAL_TOPOLOGY"):
        return Path(os.environ["RINGPS_LOCAL_TOPOLOGY"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ringps" / "local.json"


def save(calibration: Calibration, path: Path | None = None) -> Path:
    path = Path(path) if path else store_path()
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
        found = {key: float(data[key]) for key in ("alpha", "beta", "gamma")}
        found["overhead"] = float(data.get("overhead", 0.0))      # older files: none fitted
        found["cores"] = int(data.get("cores", 0))                # ... and no core budget
        found["core_share"] = float(data.get("core_share", 1.0))
        found["board"] = float(data.get("board", DEFAULT["board"]))   # ... and no board fitted
        found["memory_bandwidth"] = float(data.get("memory_bandwidth", HUGE))  # ... nor memory
        return {**found, "calibrated": True, "path": str(path)}
    except (OSError, ValueError, KeyError):
        return {**DEFAULT, "cores": machine_cores(), "core_share": 1.0, "calibrated": False,
                "path": str(path)}
