"""The yardsticks timed in the same run as ringps: the MPI library's own collectives
(row `mpi`, through mpi4py: MPI_Allreduce, MPI_Reduce_scatter, MPI_Allgatherv, MPI_Bcast)
and torch.distributed's gloo backend (row `gloo`) on the same ranks and buffers.

This is the one place in bench/ that calls mpi4py and torch.distributed directly: a
baseline is by definition somebody else's implementation. Each method returns a callable
that runs the collective once, or raises Unavailable with the reason.
"""
from __future__ import annotations

import warnings

import numpy as np


class Unavailable(Exception):
    pass


def _torch_view(x):
    import torch
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)


class MPIBaseline:
    name = "mpi"

    def __init__(self, comm):
        from mpi4py import MPI
        self.MPI = MPI
        self.mpi = comm.mpi
        self.size = comm.size

    def _op(self, op: str):
        ops = {"sum": self.MPI.SUM, "avg": self.MPI.SUM, "prod": self.MPI.PROD,
               "max": self.MPI.MAX, "min": self.MPI.MIN}
        return ops[op], (op == "avg")

    def _buffer(self, x):
        if not isinstance(x, np.ndarray):
            raise Unavailable(f"MPI has no type for {x.dtype}")
        return x

    def allreduce(self, x, op):
        x = self._buffer(x)
        mpi_op, average = self._op(op)

        def run():
            self.mpi.Allreduce(self.MPI.IN_PLACE, x, mpi_op)
            if average:
                np.divide(x, self.size, out=x)
        return run

    def reduce_scatter(self, x, out, counts, op):
        x = self._buffer(x)
        mpi_op, average = self._op(op)

        def run():
            self.mpi.Reduce_scatter(x, out, counts, mpi_op)
            if average:
                np.divide(out, self.size, out=out)
        return run

    def allgather(self, x, counts):
        x = self._buffer(x)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        return lambda: self.mpi.Allgatherv(self.MPI.IN_PLACE, [x, counts, displs, None])

    def broadcast(self, x, root):
        x = self._buffer(x)
        return lambda: self.mpi.Bcast(x, root=root)


class GlooBaseline:
    """torch.distributed with the gloo backend, rendezvous through rank 0's address."""

    name = "gloo"

    def __init__(self, comm, group=None):
        try:
            import torch
            import torch.distributed as dist
        except ImportError as exc:
            raise Unavailable("torch is not installed") from exc
        self.dist, self.torch = dist, torch
        self.size = comm.size
        self.group = group
        warnings.filterwarnings("ignore", module="torch.distributed")
        if not dist.is_initialized():
            _init_gloo(comm, dist)
        torch.set_num_threads(1)

    def subgroup(self, ranks: list[int]):
        """A gloo group of `ranks`; every rank of the world calls it (torch's rule)."""
        return None if len(ranks) == self.dist.get_world_size() else self.dist.new_group(ranks)

    def _op(self, op: str):
        R = self.dist.ReduceOp
        return {"sum": R.SUM, "avg": R.SUM, "prod": R.PRODUCT, "max": R.MAX, "min": R.MIN}[op], op == "avg"

    def allreduce(self, x, op):
        t = _torch_view(x)
        gloo_op, average = self._op(op)

        def run():
            self.dist.all_reduce(t, op=gloo_op, group=self.group)
            if average:
                t.div_(self.size)
        return run

    def reduce_scatter(self, x, out, counts, op):
        if len(set(counts)) != 1:
            raise Unavailable("gloo's reduce_scatter_tensor needs equal chunks")
        t, o = _torch_view(x), _torch_view(out)
        gloo_op, average = self._op(op)

        def run():
            self.dist.reduce_scatter_tensor(o, t, op=gloo_op, group=self.group)
            if average:
                o.div_(self.size)
        return run

    def allgather(self, x, counts):
        if len(set(counts)) != 1:
            raise Unavailable("gloo's all_gather_into_tensor needs equal chunks")
        t = _torch_view(x)
        rank = self.dist.get_rank(self.group)
        mine = t[rank * counts[0]:(rank + 1) * counts[0]]
        return lambda: self.dist.all_gather_into_tensor(t, mine, group=self.group)

    def broadcast(self, x, root):
        t = _torch_view(x)
        return lambda: self.dist.broadcast(t, src=root, group=self.group)


def _init_gloo(comm, dist) -> None:
    from collectives.rendezvous import rendezvous
    try:
        host, port = rendezvous(comm)
    except RuntimeError as exc:
        raise Unavailable(str(exc)) from None
    dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}", rank=comm.rank,
                            world_size=comm.size)
