"""The metadata check: before any data moves, every rank shares what it is about to do.

One small exchange of (collective, length, dtype, op, algorithm, root, segment size, input
error) per call (point to point, so a wait names exactly the ranks that have not arrived) (both ends of a link must cut chunks into the same segments). If any rank rejected its own input, or the ranks disagree on anything, every rank
raises the same error naming the ranks and the values, instead of an MPI truncation error,
a hang, or a silently wrong sum. `check=False` (or RINGPS_CHECK=0) skips it for speed.
"""
from __future__ import annotations

import numpy as np

from .dtypes import DTYPE_NAMES
from .errors import REASONS, InputError, MismatchError
from .ops import OP_NAMES
from .registry import COLLECTIVES
from .transport.base import Transport

NOT_APPLICABLE = "n/a"
FIELDS = ("collective", "length", "dtype", "op", "algorithm", "root", "segment_bytes")


_cache: dict = {}


def _tables() -> dict[str, list[str]]:
    """Name tables for the codes; rebuilt only when a registry gains an algorithm."""
    key = tuple(len(registry) for registry in COLLECTIVES.values())
    if _cache.get("key") != key:
        algorithms = sorted({name for registry in COLLECTIVES.values() for name in registry})
        _cache.update(key=key, tables={"collective": sorted(COLLECTIVES), "dtype": DTYPE_NAMES,
                                       "op": OP_NAMES, "algorithm": algorithms})
    return _cache["tables"]


def _code(value, table: list[str] | None) -> int:
    if table is None:
        return int(value)
    if value == NOT_APPLICABLE:
        return -2
    return table.index(value) if value in table else -1


def _name(code: int, table: list[str] | None) -> str:
    if table is None:
        return str(code)
    if code == -2:
        return NOT_APPLICABLE
    return table[code] if 0 <= code < len(table) else "?"


def _groups(column: np.ndarray, table) -> str:
    by_value: dict[int, list[int]] = {}
    for rank, code in enumerate(column.tolist()):
        by_value.setdefault(code, []).append(rank)
    parts = []
    for code, ranks in by_value.items():
        who = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {_span(ranks)}"
        parts.append(f"{_name(code, table)} on {who}")
    return "; ".join(parts)


def _span(ranks: list[int]) -> str:
    if ranks == list(range(ranks[0], ranks[-1] + 1)) and len(ranks) > 2:
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(map(str, ranks))


def row(*, collective: str, length: int, dtype: str, op: str, algorithm: str, root: int,
        segment_bytes: int, error: InputError | None) -> list[int]:
    """This rank's line of the check: every field as a code, then its input error (0: none)."""
    tables = _tables()
    values = dict(collective=collective, length=length, dtype=dtype, op=op,
                  algorithm=algorithm, root=root, segment_bytes=segment_bytes)
    codes = [_code(values[f], tables.get(f)) for f in FIELDS]
    return codes + [REASONS.index(error.reason) + 1 if error is not None else 0]


def agree(transport: Transport, *, error: InputError | None, **fields) -> None:
    """Raise on every rank unless all ranks passed fit input and agree on every field."""
    table = transport.exchange(np.asarray(row(error=error, **fields), dtype=np.int64))
    if error is not None:
        raise error
    explain(table, fields["collective"], transport.rank)


def explain(table: np.ndarray, collective: str, rank: int) -> None:
    """Raise MismatchError naming what the rows of `table` (one per rank) disagree on, or
    which ranks rejected their input; return if they all agree and none did."""
    if not (table != table[0]).any() and not table[0, -1]:
        return
    tables = _tables()
    failed = [(r, REASONS[code - 1]) for r, code in enumerate(table[:, -1].tolist())
              if 0 < code <= len(REASONS)]
    if failed:
        who = "; ".join(f"rank {r}: {reason}" for r, reason in failed)
        raise MismatchError(f"ringps {collective}: rank {rank} stops because other ranks "
                            f"rejected their input ({who}); no data was moved")
    for i, field in enumerate(FIELDS):
        column = table[:, i]
        if (column != column[0]).any():
            raise MismatchError(f"ringps {collective}: ranks disagree on {field}: "
                                f"{_groups(column, tables.get(field))} (seen by rank "
                                f"{rank}); no data was moved")
    raise MismatchError(f"ringps {collective}: ranks disagree on what this call is (seen by "
                        f"rank {rank}); no data was moved")
