"""host: aggregation in host memory by one aggregator (d2l's "CPU" strategy).

Every device's gradient goes to a buffer in host memory, the CPU reduces it there, and the
result goes back to every device. The aggregator is an extra endpoint ("host", living on
rank 0): rank 0's own gradient crosses the host link too, which is why d2l's CPU (80 ms)
is slower than GPU0 (60 ms) on the same 4-GPU PCIe box.

    step  transfers                        bytes on the wire
    0     every rank i -> host (on rank 0)  S from each i != 0; rank 0's own S is a copy
    1     host -> every rank i              S to each i != 0; rank 0's own S is a copy

Cost 2n * S/B when every endpoint sits behind one link; per step one path latency, and the
aggregator takes n messages (step 0) and posts n (step 1), rank 0's own copy among them:
2 * (alpha + n o) + 2n * S/B (+ gamma n S). In parameter-server terms: one dedicated server. On CPU buffers the host memory *is* rank 0's memory, so the data flow
equals `root` plus the aggregator's copy of its own buffer into the host buffer and back;
on GPU buffers (the GPU path) that copy is the device-to-host staging through pinned memory.
"""
from __future__ import annotations

import numpy as np

from . import root
from .context import Context
from .schedule import CompactSchedule, Schedule, gather, scatter

AGGREGATOR = 0


def allreduce(x: np.ndarray, ctx: Context) -> None:
    if ctx.rank == AGGREGATOR:
        host_buffer = ctx.host_scratch(len(x))  # pinned when x is on a device
        ctx.copy(host_buffer, x)                # upload the aggregator's own gradient
        on_host = ctx.on_host()                 # the CPU reduces what the devices send
        root.reduce(host_buffer, on_host, AGGREGATOR)
        root.broadcast(host_buffer, on_host, AGGREGATOR)
        ctx.copy(x, host_buffer)                # download the result
    else:
        root.reduce(x, ctx, AGGREGATOR)
        root.broadcast(x, ctx, AGGREGATOR)


def allreduce_pattern(n: int, count: int, itemsize: int, root: int = 0) -> CompactSchedule:
    nbytes = count * itemsize
    return CompactSchedule([gather(range(n), "host", nbytes, reduce=True),
                            scatter("host", range(n), nbytes)],
                           placement={"host": AGGREGATOR})


def allreduce_schedule(n: int, count: int, itemsize: int, root: int = 0) -> Schedule:
    return allreduce_pattern(n, count, itemsize).expand()
