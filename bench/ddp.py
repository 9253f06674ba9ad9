"""`python -m bench ddp`: one DDP training step (forward, backward with gradient allreduce,
SGD) of a model big enough that communication matters (default ~21M parameters), timed under
ringps with each allreduce algorithm and under gloo, in one run on the same ranks.

The row `none` is the floor: the same DDP step with a communication hook that moves
nothing (each bucket's gradients are left as they are), so no backend's step can be faster;
its ratio to gloo is the most any backend could gain over gloo on this model and machine."""
from __future__ import annotations

import time

import numpy as np

import collectives as C


def make_model(width: int, layers: int):
    import torch.nn as nn
    parts = [nn.Linear(1024, width), nn.ReLU()]
    for _ in range(layers - 1):
        parts += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*parts, nn.Linear(width, 10))


def time_steps(ddp, comm, steps: int, warmup: int, batch: int) -> float:
    """Median seconds per step, slowest rank per step (the harness's rule)."""
    import torch
    torch.manual_seed(comm.rank)
    x, y = torch.randn(batch, 1024), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = np.empty(steps)
    for i in range(warmup + steps):
        comm.barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(ddp(x), y).backward()
        optimizer.step()
        if i >= warmup:
            times[i - warmup] = time.perf_counter() - start
    C.allreduce(times, op="max", comm=comm, check=False)
    return float(np.median(times))


FLOOR = "none"          # the row of a step that communicates nothing


def _no_communication(state, bucket):
    """A DDP communication hook that moves nothing: the bucket comes back as it went in."""
    import torch
    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


def run_ddp(comm, algorithms: list[str], *, width=4096, layers=2, batch=32, steps=5, warmup=2,
            progress=None) -> list[dict]:
    import torch
    import torch.distributed as dist
    import collectives.torch_backend  # noqa: F401  registers "ringps", fills env:// from MPI
    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("ringps")
    groups = [(name, dist.new_group(backend="ringps", pg_options={"algorithm": name}))
              for name in algorithms] + [("gloo", dist.new_group(backend="gloo"))]
    groups.insert(len(algorithms), (FLOOR, groups[-1][1]))
    rows = []
    for name, group in groups:
        torch.manual_seed(0)
        model = make_model(width, layers)
        params = sum(p.numel() for p in model.parameters())
        ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group)
        if name == FLOOR:
            ddp.register_comm_hook(None, _no_communication)
        seconds = time_steps(ddp, comm, steps, warmup, batch)
        rows.append({"collective": "ddp", "algo": name, "ranks": comm.size, "params": params,
                     "gradient_bytes": params * 4, "step_ms": seconds * 1e3, "steps": steps})
        if progress is not None:
            progress.update(1)
    gloo = rows[-1]["step_ms"]
    for row in rows:
        row["ratio_to_gloo"] = gloo / row["step_ms"]
    return rows
