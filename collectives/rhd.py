"""rhd: Rabenseifner's allreduce, a reduce-scatter by recursive halving followed by an
all-gather by recursive doubling: what MPI libraries run for large allreduces (MPICH above
2 KB), with log2(n) steps per phase where the ring takes n-1.

The p = 2^k ranks 0..p-1 take part in the halving and doubling; with n not a power of two
the e = n-p extra ranks fold in first (the standard fold: extra p+i hands its buffer to rank
i, which reduces it) and get the result back at the end. The buffer is cut into p blocks
(partition.chunk_bounds); `half` is the range of blocks a rank still holds.

    phase     step s     rank r with          sends                keeps, reduces   bytes/rank
    fold      (e > 0)    p+i -> i, i < e      p+i: all S           i: all S         S
    halving   0 .. k-1   r ^ (p >> s+1)       the half of `half`   the other half   S/2^(s+1)
                                              the partner keeps
    doubling  0 .. k-1   r ^ (1 << s)         the 2^s blocks held  stores theirs    2^s S/p
    unfold    (e > 0)    i -> p+i, i < e      i: all S (result)    p+i stores       S

After halving rank r holds the reduced block r; doubling brings every block to every rank.
Per rank 2(p-1)/p * S in each direction (plus S each way for a fold pair), the same lower
bound as the ring, but in 2k steps instead of 2(n-1).

Cost per step (topology/model.py): one path latency (alpha) and, at every rank, one send
posted and one message taken (2 overheads o); the fold and unfold steps 1 message at each
end. On p = 2^k ranks: 2k * (alpha + 2o) + 2(p-1)/p * S/B + gamma (p-1)/p * S; with e extra
ranks add 2 * (alpha + o + S/B) + gamma * S.
"""
from __future__ import annotations

import numpy as np

from .context import Context
from .partition import chunk_bounds
from .schedule import CompactSchedule, Exchange, Schedule, chunk_nbytes


def participants(n: int) -> tuple[int, int]:
    """(p, e): the largest power of two p <= n that halves and doubles, and the e = n - p
    extra ranks that fold into ranks 0..e-1."""
    p = 1 << (max(n, 1).bit_length() - 1)
    return p, n - p


def halves(p: int, r: int):
    """Per halving step: (partner, blocks kept, blocks given) as block ranges of rank r."""
    lo, hi, distance = 0, p, p // 2
    while distance:
        mid = (lo + hi) // 2
        lower, upper = (lo, mid), (mid, hi)
        keep, give = (lower, upper) if not r & distance else (upper, lower)
        yield r ^ distance, keep, give
        lo, hi = keep
        distance //= 2


def doublings(p: int, r: int):
    """Per doubling step: (partner, blocks held, blocks the partner holds)."""
    distance = 1
    while distance < p:
        partner = r ^ distance
        yield partner, _aligned(r, distance), _aligned(partner, distance)
        distance *= 2


def _aligned(r: int, width: int) -> tuple[int, int]:
    start = r // width * width
    return start, start + width


def allreduce(x: np.ndarray, ctx: Context) -> None:
    n, r, t = ctx.size, ctx.rank, ctx.transport
    p, extra = participants(n)
    if r >= p:                                  # fold in, then wait for the result
        t.wait(t.isend(x, r - p))
        t.wait(t.irecv(x, r - p))
        return
    if r < extra:
        t.wait(t.irecv_reduce(x, r + p, ctx.scratch(len(x)), ctx.combine))
    blocks = chunk_bounds(len(x), p)

    def span(first_last):                       # blocks [first, last) as elements of x
        first, last = first_last
        return slice(blocks[first][0], blocks[last - 1][1])

    scratch = ctx.scratch(-(-len(x) // 2) + p)
    for partner, keep, give in halves(p, r):
        kept = x[span(keep)]
        received = t.irecv_reduce(kept, partner, scratch[:len(kept)], ctx.combine)
        t.waitall([received, t.isend(x[span(give)], partner)])
    ctx.finalize(x[span((r, r + 1))])
    for partner, held, theirs in doublings(p, r):
        t.waitall([t.irecv(x[span(theirs)], partner), t.isend(x[span(held)], partner)])
    if r < extra:
        t.wait(t.isend(x, r + p))


# ---- schedules -------------------------------------------------------------------------

def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0,
                      halving: bool = True) -> CompactSchedule:
    """The table above as patterns: the fold and unfold as exchanges between pairs, each
    halving and doubling step as one exchange over p/2 pairs (bytes by receiver: the half
    the receiver keeps; by sender: the blocks the sender holds).

    halving=False prices recursive doubling instead, MPICH's allreduce for short messages
    (below 2 KB): k steps in which r and r ^ (1 << s) swap and reduce the whole buffer,
    k * (alpha + 2o + S/B + gamma S). It is drawn beside rhd for comparison (the `rd`
    variant); ringps does not run it."""
    p, extra = participants(n)
    whole = count * itemsize
    block = chunk_nbytes(count, p, itemsize)
    kept = [[sum(block[slice(*keep)]) for _, keep, _ in halves(p, r)] for r in range(p)]
    held = [[sum(block[slice(*mine)]) for _, mine, _ in doublings(p, r)] for r in range(p)]
    reducing, gathering = [], []
    for s in range(p.bit_length() - 1):
        if not halving:                         # recursive doubling: whole buffers
            reducing.append(Exchange(tuple(((r, r ^ (1 << s)), (r, r ^ (1 << s)), (whole, whole))
                                           for r in range(p) if not r & (1 << s)),
                                     "receiver", reduce=True))
            continue
        pairs = [(r, r ^ (p >> (s + 1))) for r in range(p) if not r & (p >> (s + 1))]
        reducing.append(Exchange(tuple(((a, b), (a, b), (kept[a][s], kept[b][s]))
                                       for a, b in pairs), "receiver", reduce=True))
        pairs = [(r, r ^ (1 << s)) for r in range(p) if not r & (1 << s)]
        gathering.append(Exchange(tuple(((a, b), (a, b), (held[a][s], held[b][s]))
                                        for a, b in pairs), "sender"))
    fold = [Exchange(tuple(((p + i,), (i,), (whole,)) for i in range(extra)), "receiver",
                     reduce=True)] if extra else []
    unfold = [Exchange(tuple(((i,), (p + i,), (whole,)) for i in range(extra)),
                       "receiver")] if extra else []
    return CompactSchedule(fold + reducing + gathering + unfold)


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0, **variant) -> Schedule:
    return allreduce_pattern(n, count, itemsize, **variant).expand()


def allreduce_variants(nodes: int, ranks_per_node: int) -> dict[str, dict]:
    """What bench scaling --preset draws: rhd, and recursive doubling beside it (`rd`,
    priced only) to show where MPI libraries switch from one to the other."""
    return {"rhd": {}, "rd": {"halving": False}}
