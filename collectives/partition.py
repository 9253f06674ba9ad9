"""Chunk and segment bounds.

Every algorithm cuts a buffer of `count` elements into `parts` chunks the same way, so that
peers agree on offsets without talking. Remainders are spread explicitly: the first
`count % parts` chunks get one element more, so chunk sizes differ by at most one and a
buffer shorter than `parts` simply has empty chunks at the end.

Segments cut one chunk further so a ring step can be pipelined: segment k of a step is on
the wire while segment k-1 is being reduced.
"""
from __future__ import annotations

DEFAULT_SEGMENT_BYTES = 1 << 20
MAX_SEGMENTS = 256        # per chunk: more outstanding messages only slow MPI's matching down


def chunk_bounds(count: int, parts: int) -> list[tuple[int, int]]:
    """[(start, stop)] of `parts` contiguous chunks covering range(count)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    base, extra = divmod(count, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def segment_bounds(start: int, stop: int, itemsize: int,
                   segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> list[tuple[int, int]]:
    """Cut [start, stop) into segments of about `segment_bytes` (at least one element).

    Segments grow beyond `segment_bytes` where a chunk would otherwise need more than
    MAX_SEGMENTS of them. An empty chunk still yields one empty segment so that both ends
    of a link post the same number of messages."""
    per = max(1, segment_bytes // max(1, itemsize), -(-(stop - start) // MAX_SEGMENTS))
    if stop <= start:
        return [(start, start)]
    return [(s, min(s + per, stop)) for s in range(start, stop, per)]


def max_chunk(count: int, parts: int) -> int:
    """Length of the largest chunk (what a scratch buffer must hold)."""
    return -(-count // parts) if parts else 0
