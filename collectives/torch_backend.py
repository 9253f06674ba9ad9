"""The "ringps" torch.distributed backend: import this module and pick "ringps".

    import collectives.torch_backend            # registers "ringps"
    dist.init_process_group("ringps")           # under mpiexec; RINGPS_ALGORITHM=ring|blocked|...
    model = DDP(model)
    sub = dist.new_group([0, 1], backend="ringps", pg_options={"algorithm": "blocked"})

A Python `dist.ProcessGroup` subclass (the route torch offers Python backends), one per
group, each on its own Communicator: the world's ranks, or a group built by its members
alone (`new_group` runs the creator on members only). Allreduce uses the group's algorithm
(pg_options {"algorithm": ...}, else RINGPS_ALGORITHM, else "auto"); the other
collectives use the ring primitives, all-to-all and gather/scatter go point to point.

Under mpiexec, importing this module fills in what `init_process_group`'s env:// rendezvous
needs (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from MPI unless they are set:
a collective step, so every rank must import it. Each later init_process_group gets a fresh
port the same way, so init / destroy / init in one process never dials a stale store.

RINGPS_DEBUG=detail checks a fingerprint of every collective across ranks first (like
TORCH_DISTRIBUTED_DEBUG=DETAIL); without it the core's cheap metadata check still catches
mismatched lengths, dtypes and ops. RINGPS_DEBUG=info (and detail) prints, on rank 0, which
algorithm `auto` chose and why, once per (collective, size class).

By default each group runs its collectives, in call order, on a thread of its own: the caller
gets a Work at once (async_op=True returns immediately, DDP overlaps gradient buckets with
backward), bad input still raises in the caller. With RINGPS_DEBUG=detail collectives run in
the caller, after the fingerprint check. CUDA tensors take the GPU path (arrays.py: CuPy
through DLPack; without CuPy they are refused with a message naming the GPU extra); the
group's thread runs each call with the caller's current stream made current, so the device
path waits for what the caller queued. This path has not yet run on a GPU.
"""
from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch._C import _distributed_c10d as c10d
from torch._C._distributed_c10d import _create_work_from_future

from . import api, fusion, watchdog
from .registry import ALGORITHMS
from .torch_args import SIGNATURES, canonical
from .transport import board

BOARD_DTYPES = {torch.float32, torch.float64, torch.int8, torch.uint8, torch.int32, torch.int64}

NAME = "ringps"
RedOpType = dist.ReduceOp.RedOpType
OPS = {RedOpType.SUM: "sum", RedOpType.AVG: "avg", RedOpType.PRODUCT: "prod",
       RedOpType.MIN: "min", RedOpType.MAX: "max", RedOpType.PREMUL_SUM: "sum"}


def _op(reduce_op) -> tuple[str, object]:
    """(ringps op name, premultiplication factor or None) for a torch ReduceOp."""
    kind = reduce_op.op if hasattr(reduce_op, "op") else reduce_op
    if kind not in OPS:
        raise ValueError(f"ringps: ReduceOp {kind.name} is not supported "
                         f"(SUM, AVG, PRODUCT, MIN, MAX, PREMUL_SUM are)")
    return OPS[kind], (reduce_op.factor if kind == RedOpType.PREMUL_SUM else None)


def _done(result):
    future = torch.futures.Future()
    future.set_result(result)
    return _create_work_from_future(future)


class _PointToPointWork(dist._Work):
    """send/recv: the transfer is posted at once and completes in wait()."""

    def __init__(self, transport, requests, tensors):
        super().__init__()
        self._transport, self._requests, self._tensors = transport, requests, tensors
        self._future = torch.futures.Future()

    def wait(self, timeout=None):
        if not self._future.done():
            self._transport.waitall(self._requests)
            self._future.set_result(self._tensors)
        return True

    def is_completed(self):
        return self._future.done()

    def get_future(self):
        return self._future

    def _source_rank(self):
        """For recv from any source: the rank the message came from."""
        self.wait()
        return self._requests[0].source


class RingpsProcessGroup(dist.ProcessGroup):
    def __init__(self, comm, algorithm: str, rank: int, size: int, name: str = ""):
        super().__init__(rank, size)
        self._group_name, self._group_desc = name, ""
        if comm.rank != rank or comm.size != size:
            raise RuntimeError(f"ringps: torch rank {rank}/{size} is MPI rank "
                               f"{comm.rank}/{comm.size}: launch with mpiexec so they agree")
        self.comm, self.algorithm = comm, algorithm

    def shutdown(self) -> None:
        """destroy_process_group: give the group's communicator back (its shared segments
        and MPI communicators; a process that makes and destroys many groups would run out)."""
        close = getattr(self.comm, "close", None)
        if close is not None:
            close()

    def getBackendName(self):
        return NAME

    def getGroupName(self):            # DeviceMesh (FSDP2) looks groups up by name
        return self._group_name

    def setGroupName(self, name):
        self._group_name = name

    def getGroupDesc(self):
        return self._group_desc

    def setGroupDesc(self, desc):
        self._group_desc = desc

    def __repr__(self):
        rings = getattr(self.comm, "rings", None)
        return f"RingpsProcessGroup(rank={self.comm.rank}, size={self.comm.size}, " \
               f"algorithm={self.algorithm}{f', rings={rings.text}' if rings else ''})"

    # -- reductions -------------------------------------------------------------------------
    def _allreduce_one(self, tensor, op: str, factor) -> None:
        if factor is not None:
            tensor.mul_(factor)
        if tensor.dtype in BOARD_DTYPES and tensor.device.type == "cpu" and \
                not tensor.requires_grad and tensor.is_contiguous() and \
                tensor.numel() * tensor.element_size() <= board.CAPACITY:
            tensor = tensor.numpy()     # a view: a small call can take the board (board.py)
        api.allreduce(tensor, op=op, algorithm=self.algorithm, comm=self.comm)

    def allreduce(self, tensors, opts):
        op, factor = _op(opts.reduceOp)
        for tensor in tensors:
            self._allreduce_one(tensor, op, factor)
        return _done(tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        """Tensor fusion (fusion.py): fused buffers per dtype, up to RINGPS_FUSION_THRESHOLD."""
        op, factor = _op((opts or c10d.AllreduceCoalescedOptions()).reduceOp)
        if factor is not None:
            for tensor in tensors:
                tensor.mul_(factor)
        fusion.allreduce_coalesced(tensors, op=op, algorithm=self.algorithm, comm=self.comm)
        return _done(tensors)

    def reduce(self, tensors, opts):
        op, factor = _op(opts.reduceOp)
        for tensor in tensors:
            if factor is not None:
                tensor.mul_(factor)
            api.reduce(tensor, op=op, root=opts.rootRank, comm=self.comm)
        return _done(tensors)

    def _reduce_scatter_flat(self, flat, output, op: str, factor) -> None:
        if factor is not None:
            flat.mul_(factor)
        mine = api.reduce_scatter(flat, op=op, comm=self.comm)
        output.copy_(mine.view_as(output))

    def reduce_scatter(self, outputs, input_lists, opts):
        op, factor = _op(opts.reduceOp)
        for output, inputs in zip(outputs, input_lists):
            _same_sizes(inputs, output, "reduce_scatter")
            self._reduce_scatter_flat(torch.cat([t.reshape(-1) for t in inputs]), output, op,
                                      factor)
        return _done(outputs)

    def reduce_scatter_single(self, output, input, opts):
        """_reduce_scatter_base / reduce_scatter_tensor: input is n outputs end to end; it is
        left unchanged (reduced in a copy), so output may alias a slice of it (FSDP2)."""
        op, factor = _op(opts.reduceOp)
        _check_multiple(input, output, self.comm.size, "reduce_scatter_tensor")
        self._reduce_scatter_flat(input.reshape(-1).clone(), output, op, factor)
        return _done([output])

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts):
        for output, input in zip(outputs, inputs, strict=True):
            self.reduce_scatter_single(output, input, opts)
        return _done(outputs)

    # -- gathers and broadcasts -------------------------------------------------------------
    def broadcast(self, tensors, opts):
        for tensor in tensors:
            api.broadcast(tensor, root=opts.rootRank, comm=self.comm)
        return _done(tensors)

    def _allgather_flat(self, flat, input) -> None:
        n = input.numel()
        mine = flat[self.comm.rank * n:(self.comm.rank + 1) * n]
        if mine.data_ptr() != input.data_ptr():          # aliased input is already in place
            mine.copy_(input.reshape(-1))
        api.allgather(flat, comm=self.comm)

    def allgather(self, output_lists, inputs, opts):
        for outputs, input in zip(output_lists, inputs):
            _same_sizes(outputs, input, "allgather")
            flat = torch.empty(input.numel() * self.comm.size, dtype=input.dtype)
            self._allgather_flat(flat, input)
            for i, out in enumerate(outputs):
                out.copy_(flat[i * input.numel():(i + 1) * input.numel()].view_as(out))
        return _done(output_lists)

    def allgather_coalesced(self, output_lists, input_list, opts=None):
        """output_lists[j][i] = rank j's input_list[i] (gloo's layout): the inputs of a dtype
        laid end to end and gathered in one allgather."""
        n, by_dtype = self.comm.size, {}
        _coalesced_sizes(output_lists, input_list, n)
        for i, input in enumerate(input_list):
            by_dtype.setdefault(input.dtype, []).append(i)
        for dtype, members in by_dtype.items():
            sizes = [input_list[i].numel() for i in members]
            width = sum(sizes)
            flat = torch.empty(width * n, dtype=dtype)
            mine = flat[self.comm.rank * width:(self.comm.rank + 1) * width]
            if width:
                mine.copy_(torch.cat([input_list[i].reshape(-1) for i in members]))
            api.allgather(flat, comm=self.comm)
            for j in range(n):
                offset = j * width
                for i, size in zip(members, sizes):
                    output_lists[j][i].copy_(flat[offset:offset + size].view_as(
                        output_lists[j][i]))
                    offset += size
        return _done(output_lists)

    def monitored_barrier(self, timeout=None, wait_all_ranks=False):
        """gloo's barrier that names late ranks: here a barrier under the group's timeout
        (a rank that does not arrive raises PeerTimeout naming it)."""
        self.barrier(c10d.BarrierOptions()).wait()

    def all_gather_single(self, output, input, opts):
        """_allgather_base / all_gather_into_tensor, in place when output is contiguous."""
        _check_multiple(output, input, self.comm.size, "all_gather_into_tensor")
        if output.is_contiguous():
            self._allgather_flat(output.view(-1), input)
        else:
            flat = torch.empty(output.numel(), dtype=output.dtype)
            self._allgather_flat(flat, input)
            output.copy_(flat.view_as(output))
        return _done([output])

    def all_gather_single_coalesced(self, outputs, inputs, opts):
        for output, input in zip(outputs, inputs, strict=True):
            self.all_gather_single(output, input, opts)
        return _done(outputs)

    # -- point to point based -----------------------------------------------------------------
    def _exchange(self, sends: dict, receives: dict) -> None:
        """Post every receive and send (peer -> contiguous tensor), then wait for all."""
        t = self.comm.transport
        requests = [t.irecv(_numpy(buf), peer) for peer, buf in receives.items()]
        requests += [t.isend(_numpy(buf), peer) for peer, buf in sends.items()]
        t.waitall(requests)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts):
        """alltoall_base: splits along dim 0, even when not given, uneven when given."""
        n, r = self.comm.size, self.comm.rank
        rows_out = _splits(output, output_split_sizes, n)
        rows_in = _splits(input, input_split_sizes, n)
        ins = list(torch.split(input, rows_in))
        outs = list(torch.split(output, rows_out))
        staged_out = [o.contiguous() for o in outs]
        staged_in = [i.contiguous() for i in ins]
        staged_out[r].copy_(staged_in[r])
        self._exchange({p: staged_in[p] for p in range(n) if p != r},
                       {p: staged_out[p] for p in range(n) if p != r})
        for o, s in zip(outs, staged_out):
            if o.data_ptr() != s.data_ptr():
                o.copy_(s)
        return _done([output])

    def alltoall(self, output_tensors, input_tensors, opts):
        n, r = self.comm.size, self.comm.rank
        staged_out = [o.contiguous() for o in output_tensors]
        staged_out[r].copy_(input_tensors[r])
        self._exchange({p: input_tensors[p].contiguous() for p in range(n) if p != r},
                       {p: staged_out[p] for p in range(n) if p != r})
        for o, s in zip(output_tensors, staged_out):
            if o.data_ptr() != s.data_ptr():
                o.copy_(s)
        return _done(output_tensors)

    def gather(self, output_lists, inputs, opts):
        root, r = opts.rootRank, self.comm.rank
        for k, input in enumerate(inputs):
            if r == root:
                outputs = [o.contiguous() for o in output_lists[k]]
                outputs[r].copy_(input)
                self._exchange({}, {p: outputs[p] for p in range(self.comm.size) if p != r})
                for o, s in zip(output_lists[k], outputs):
                    if o.data_ptr() != s.data_ptr():
                        o.copy_(s)
            else:
                self._exchange({root: input.contiguous()}, {})
        return _done(output_lists)

    def scatter(self, outputs, input_lists, opts):
        root, r = opts.rootRank, self.comm.rank
        for k, output in enumerate(outputs):
            staged = output.contiguous()
            if r == root:
                staged.copy_(input_lists[k][r])
                self._exchange({p: input_lists[k][p].contiguous()
                                for p in range(self.comm.size) if p != r}, {})
            else:
                self._exchange({}, {root: staged})
            if staged.data_ptr() != output.data_ptr():
                output.copy_(staged)
        return _done(outputs)

    def barrier(self, opts=None):
        self.comm.barrier()
        return _done([])

    # -- older spellings, for callers that use the ProcessGroup object directly --------------
    def _allgather_base(self, output, input, opts=None):
        return self.all_gather_single(output, input, opts or c10d.AllgatherOptions())

    def _reduce_scatter_base(self, output, input, opts=None):
        return self.reduce_scatter_single(output, input, opts or c10d.ReduceScatterOptions())

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self.all_to_all_single(output, input, output_split_sizes, input_split_sizes,
                                      opts or c10d.AllToAllOptions())

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        return self.all_gather_single_coalesced(outputs, inputs, opts or c10d.AllgatherOptions())

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        return self.reduce_scatter_single_coalesced(outputs, inputs,
                                                    opts or c10d.ReduceScatterOptions())

    def send(self, tensors, dst, tag):
        t = self.comm.transport
        return _PointToPointWork(t, [t.isend(_numpy(x), dst, tag) for x in tensors], tensors)

    def recv(self, tensors, src, tag):
        t = self.comm.transport
        return _PointToPointWork(t, [t.irecv(_numpy(x), src, tag) for x in tensors], tensors)

    def recv_anysource(self, tensors, tag):
        t = self.comm.transport
        return _PointToPointWork(t, [t.irecv(_numpy(x), None, tag) for x in tensors], tensors)


def _short_forms(name: str, function):
    def method(self, *args, **kwargs):
        return function(self, *canonical(name, args, kwargs))
    method.__name__, method.__doc__ = name, function.__doc__
    return method


for _name in SIGNATURES:            # torch's short call forms, options left out (torch_args.py)
    setattr(RingpsProcessGroup, _name, _short_forms(_name, getattr(RingpsProcessGroup, _name)))


# ---- RINGPS_DEBUG=detail: like TORCH_DISTRIBUTED_DEBUG=DETAIL's collective fingerprints ----

CHECKED = ("allreduce", "allreduce_coalesced", "reduce", "reduce_scatter", "reduce_scatter_single",
           "reduce_scatter_single_coalesced", "broadcast", "allgather", "all_gather_single",
           "all_gather_single_coalesced", "all_to_all_single", "alltoall", "gather", "scatter",
           "barrier", "allgather_coalesced")
DTYPE_CODES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8,
               torch.uint8, torch.int32, torch.int64, torch.bool, torch.int16]
FINGERPRINT = ("sequence number", "collective", "op", "root", "dtype", "numel", "ndim",
               "shape[0]", "shape[1]", "shape[2]", "shape[3]", "tensors")


def _first_tensor(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)):
            found = _first_tensor(a)
            if found is not None:
                return found
    return None


def _fingerprint(sequence: int, name: str, args) -> list[int]:
    tensor = _first_tensor(args)
    opts = args[-1] if args else None
    op = getattr(getattr(opts, "reduceOp", None), "op", None)
    shape = list(tensor.shape[:4]) if tensor is not None else []
    count = sum(1 for a in args for _ in (a if isinstance(a, (list, tuple)) else [a])
                if isinstance(_, torch.Tensor))
    return [sequence, CHECKED.index(name), int(op) if op is not None else -1,
            int(getattr(opts, "rootRank", -1)) if opts is not None else -1,
            DTYPE_CODES.index(tensor.dtype) if tensor is not None and tensor.dtype in DTYPE_CODES
            else -1, tensor.numel() if tensor is not None else -1,
            tensor.dim() if tensor is not None else -1] + shape + [-1] * (4 - len(shape)) + [count]


def _checked(name: str):
    def method(self, *args, **kwargs):
        args, kwargs = canonical(name, args, kwargs), {}
        self._sequence += 1
        everything = list(args)
        mine = np.asarray(_fingerprint(self._sequence, name, everything), dtype=np.int64)
        table = self.comm.transport.exchange(mine)
        for i, field in enumerate(FINGERPRINT):
            column = table[:, i]
            if (column != column[0]).any():
                values = ", ".join(f"rank {r}: {_describe(field, v)}"
                                   for r, v in enumerate(column.tolist()))
                raise ValueError(f"ringps debug: ranks disagree on the {field} of call "
                                 f"#{self._sequence} ({name} on rank {self.comm.rank}): {values}")
        return getattr(RingpsProcessGroup, name)(self, *args, **kwargs)
    method.__name__ = name
    return method


def _describe(field: str, value: int) -> str:
    if value < 0:
        return "-"
    if field == "collective":
        return CHECKED[value]
    if field == "dtype":
        return str(DTYPE_CODES[value]).removeprefix("torch.")
    if field == "op":
        return RedOpType(value).name
    return str(value)


class DebugProcessGroup(RingpsProcessGroup):
    """RingpsProcessGroup that checks a fingerprint (sequence number, collective, op, root,
    dtype, shape) across ranks before every collective and raises on every rank, naming the
    ranks and values, when they differ."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sequence = 0


for _name in CHECKED:
    setattr(DebugProcessGroup, _name, _checked(_name))


# ---- the default: collectives progress on a per-group thread --------------------------------

def _tensors(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from _tensors(a)


PRECHECKS = {   # size checks that must fail in the caller, before anything is queued
    "allgather": lambda pg, outs, ins, opts: [_same_sizes(o, i, "allgather")
                                              for o, i in zip(outs, ins)],
    "reduce_scatter": lambda pg, outs, ins, opts: [_same_sizes(i, o, "reduce_scatter")
                                                   for o, i in zip(outs, ins)],
    "allgather_coalesced": lambda pg, outs, ins, opts: _coalesced_sizes(outs, ins, pg.comm.size),
    "all_gather_single": lambda pg, out, inp, opts: _check_multiple(
        out, inp, pg.comm.size, "all_gather_into_tensor"),
    "reduce_scatter_single": lambda pg, out, inp, opts: _check_multiple(
        inp, out, pg.comm.size, "reduce_scatter_tensor"),
    "all_to_all_single": lambda pg, out, inp, out_splits, in_splits, opts: (
        _splits(out, out_splits, pg.comm.size), _splits(inp, in_splits, pg.comm.size)),
}


# FSDP2 (CPU) reads these results as soon as the call returns, so they run in the caller,
# once the group's queue has drained (call order is kept). Found by the FSDP2 test.
IN_CALLER = {"all_gather_single", "all_gather_single_coalesced", "reduce_scatter_single",
             "reduce_scatter_single_coalesced"}


class _BackgroundWork(dist._Work):
    """A collective queued on its group's thread; wait() blocks until that thread ran it
    (or raises after `timeout`, like gloo's work, leaving the collective queued)."""

    def __init__(self, future):
        super().__init__()
        self._future = future

    def wait(self, timeout=None):
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds:                                   # torch passes 0 for "no timeout"
            deadline = time.monotonic() + seconds
            while not self._future.done():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ringps: timed out after {seconds:g} s waiting for a "
                                       f"collective to complete")
                time.sleep(0.0005)
        self._future.wait()
        return True

    def result(self):
        self.wait()
        return self._future.value()

    def is_completed(self):
        return self._future.done()

    def get_future(self):
        return self._future


def _queued(name: str):
    def method(self, *args, **kwargs):
        from .arrays import as_buffer
        args, kwargs = canonical(name, args, kwargs), {}   # torch's short forms and defaults
        for tensor in _tensors(list(args) + list(kwargs.values())):
            as_buffer(tensor)                            # dtype, device, contiguity: raise now
        opts = kwargs.get("opts", args[-1] if args else None)
        if hasattr(opts, "reduceOp"):
            _op(opts.reduceOp)
        root = getattr(opts, "rootRank", 0)
        if not 0 <= root < self.comm.size:
            raise ValueError(f"ringps {name}: root {root} is out of range for {self.comm.size} "
                             f"ranks")
        if name in PRECHECKS:
            PRECHECKS[name](self, *args, **kwargs)
        if name in IN_CALLER:
            self._jobs.join()                            # after everything queued before it
            return getattr(RingpsProcessGroup, name)(self, *args, **kwargs)
        future = torch.futures.Future()
        self._jobs.put((name, args, kwargs, future, _caller_stream(args, kwargs)))
        return _BackgroundWork(future)
    method.__name__ = name
    return method


def _caller_stream(args, kwargs):
    """The caller's current CUDA stream when the call has CUDA tensors: the group's thread
    makes it current there too, so the device path waits for what the caller queued."""
    for tensor in _tensors(list(args) + list(kwargs.values())):
        if tensor.device.type == "cuda":
            return torch.cuda.current_stream(tensor.device)
    return None


class BackgroundProcessGroup(RingpsProcessGroup):
    """The default: every collective is checked in the caller (bad input raises there), then
    runs in call order on one thread per group (IN_CALLER ones excepted), so async_op=True returns at once and DDP's
    gradient buckets reduce while backward goes on. A collective that fails on that thread
    aborts the job with a message naming the rank and the call: a failed future would crash
    DDP's reducer with less to go on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._jobs: queue.Queue = queue.Queue()
        self._calls = 0                                  # collectives run, for the teardown line
        self._thread = threading.Thread(target=self._serve, name=f"ringps-{self._group_name}",
                                        daemon=True)
        self._thread.start()
        _running.add(self)

    def shutdown(self) -> None:
        """Finish what is queued, then stop the group's thread (destroy_process_group, exit)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        _running.discard(self)
        super().shutdown()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            name, args, kwargs, future, stream = job
            self._calls += 1
            try:
                with torch.cuda.stream(stream) if stream is not None else nullcontext():
                    work = getattr(RingpsProcessGroup, name)(self, *args, **kwargs)
                result = work.get_future().value()
                _completions.submit(future.set_result, result)
            except BaseException as exc:           # noqa: BLE001 - report, then end the job
                # a failed future would crash DDP's reducer with less to go on, and the
                # peers would wait for this rank: always end the job (watchdog.py)
                watchdog.end_job(exc, always=True,
                                 where=f"group {self._group_name!r}, torch {name} "
                                       f"#{self._calls}, on the group's thread")
                self.comm.abort(1)
            finally:
                self._jobs.task_done()


for _name in CHECKED:
    setattr(BackgroundProcessGroup, _name, _queued(_name))

# Futures complete on these threads, not on a group's own: a callback (`then`) runs where its
# future completes, and one that waits for another collective of the same group (PowerSGD's
# hook does) would otherwise wait for the very thread it blocks. Like gloo's worker threads.
_completions = ThreadPoolExecutor(4, thread_name_prefix="ringps-complete")

_running: set = set()


@atexit.register
def _stop_threads() -> None:
    for group in list(_running):
        group.shutdown()


def _numpy(tensor):
    from .arrays import as_buffer
    return as_buffer(tensor).array


def _same_sizes(tensors, like, what: str) -> None:
    for t in tensors:
        if t.numel() != like.numel() or t.dtype != like.dtype:
            raise ValueError(f"ringps {what}: every tensor in the list must match "
                             f"{tuple(like.shape)} {like.dtype}, got {tuple(t.shape)} {t.dtype}")


def _coalesced_sizes(output_lists, inputs, n: int) -> None:
    if len(output_lists) != n:
        raise ValueError(f"ringps allgather_coalesced: output lists must be one per rank "
                         f"({n}), got {len(output_lists)}")
    for outputs in output_lists:
        if len(outputs) != len(inputs):
            raise ValueError(f"ringps allgather_coalesced: each rank's output list needs one "
                             f"tensor per input ({len(inputs)}), got {len(outputs)}")
        for out, input in zip(outputs, inputs):
            _same_sizes([out], input, "allgather_coalesced")


def _check_multiple(big, small, n: int, what: str) -> None:
    if big.numel() != small.numel() * n or big.dtype != small.dtype:
        raise ValueError(f"ringps {what}: the large tensor must hold {n} x the small one "
                         f"({small.numel()} {small.dtype}), got {big.numel()} {big.dtype}")


def _splits(tensor, sizes, n: int) -> list[int]:
    if sizes:
        if len(sizes) != n or sum(sizes) != tensor.shape[0]:
            raise ValueError(f"ringps all_to_all_single: split sizes {list(sizes)} do not cut "
                             f"dim 0 ({tensor.shape[0]}) into {n} parts")
        return list(sizes)
    if tensor.shape[0] % n:
        raise ValueError(f"ringps all_to_all_single: dim 0 ({tensor.shape[0]}) is not "
                         f"divisible by {n} and no split sizes were given")
    return [tensor.shape[0] // n] * n


def _algorithm(pg_options) -> str:
    chosen = None
    if isinstance(pg_options, dict):
        chosen = pg_options.get("algorithm")
    elif pg_options is not None:
        chosen = getattr(pg_options, "algorithm", None)
    chosen = chosen or os.environ.get("RINGPS_ALGORITHM") or "auto"
    if chosen not in ALGORITHMS:
        raise ValueError(f"ringps: unknown algorithm {chosen!r} (known: {', '.join(ALGORITHMS)})")
    return chosen


def _show_auto_choices() -> None:
    """RINGPS_DEBUG=info or detail: let `auto`'s reasons (logger "ringps.auto", which it
    writes once per size class on rank 0) reach stderr."""
    import logging
    if os.environ.get("RINGPS_DEBUG", "").lower() not in ("info", "detail"):
        return
    log = logging.getLogger("ringps.auto")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ringps: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def _create(backend_options, pg_options):
    """The creator torch calls on each member of a new group: over MPI under mpiexec, over a
    gloo group on torch's own store under torchrun (the same script runs either way)."""
    from .rendezvous import under_mpi
    _show_auto_choices()
    timeout = getattr(backend_options, "timeout", None)
    if not under_mpi():
        seconds = _group_timeout(timeout)
        from .storecomm import StoreCommunicator
        comm = StoreCommunicator(backend_options.store, backend_options.group_rank,
                                 backend_options.group_size, seconds)
        return _group_kind()(comm, _algorithm(pg_options), comm.rank, comm.size,
                             str(getattr(backend_options, "group_id", "") or ""))
    world = api.default_comm()
    ranks = list(getattr(backend_options, "global_ranks_in_group", []) or range(world.size))
    seconds = _group_timeout(timeout, world.timeout)
    from .comm import Communicator
    comm = Communicator(world.mpi, timeout=seconds, servers=0,
                        rings=world.rings or "rank-order", transport=world.transport_choice,
                        _node_of_rank=world.node_of_rank) \
        if len(ranks) == world.size else world.group_of(ranks)
    comm.transport.timeout = seconds
    return _group_kind()(comm, _algorithm(pg_options), backend_options.group_rank,
                              backend_options.group_size,
                              str(getattr(backend_options, "group_id", "") or ""))


def _group_timeout(timeout, fallback: float | None = None) -> float:
    """A group's deadline: init_process_group(timeout=) / new_group(timeout=) when the caller
    gave one, else the job's (`fallback`: the world Communicator's, from RINGPS_TIMEOUT or
    init(timeout=); 300 s by default), the one deadline of every ringps wait. torch passes
    its own default (30 min) when the caller gave none; that value counts as none."""
    given = timeout.total_seconds() if isinstance(timeout, timedelta) else None
    torch_default = getattr(dist.constants, "default_pg_timeout", None)
    if given is None or (torch_default is not None and timeout == torch_default):
        return fallback if fallback is not None else watchdog.default_timeout()
    return given


def _group_kind():
    debug = os.environ.get("RINGPS_DEBUG", "").lower() == "detail"
    return DebugProcessGroup if debug else BackgroundProcessGroup


_our_port: dict = {}        # the MASTER_PORT ringps chose (absent: the user set their own)


def _bootstrap_environment() -> None:
    """Under mpiexec, give env:// what it needs from MPI (a collective: every rank imports)."""
    from .rendezvous import rendezvous, under_mpi
    if not under_mpi() or all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_PORT")):
        return
    world = api.default_comm()
    host, port = rendezvous(world)
    os.environ.setdefault("RANK", str(world.rank))
    os.environ.setdefault("WORLD_SIZE", str(world.size))
    os.environ.setdefault("LOCAL_RANK", str(world.local_rank))
    os.environ.setdefault("MASTER_ADDR", host)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = _our_port["port"] = str(port)
        _fresh_port_per_init()


def _fresh_port_per_init() -> None:
    """Give every env:// init_process_group under mpiexec a port of its own, agreed over MPI.

    One port for the whole process breaks a second init (init, destroy, init: torch's own
    tests and ours do it): rank 0's old store lives on until its last reference is collected,
    so a fast peer may dial the old store and pass, while rank 0 waits for it at the new
    one, for ever. Only the port ringps chose is replaced; init is collective on every rank,
    so the agreement is too. Without torch's handler table (a private name) nothing changes."""
    from importlib import import_module
    from .rendezvous import rendezvous
    handlers = getattr(import_module("torch.distributed.rendezvous"), "_rendezvous_handlers", None)
    env = handlers.get("env") if isinstance(handlers, dict) else None
    if env is None or getattr(env, "ringps_fresh_port", False):
        return

    def env_with_fresh_port(url, *args, **kwargs):
        if os.environ.get("MASTER_PORT") == _our_port.get("port"):
            _, port = rendezvous(api.default_comm())
            os.environ["MASTER_PORT"] = _our_port["port"] = str(port)
        return env(url, *args, **kwargs)

    env_with_fresh_port.ringps_fresh_port = True
    handlers["env"] = env_with_fresh_port


if NAME not in dist.Backend.backend_list:
    dist.Backend.register_backend(NAME, _create, extended_api=True, devices=["cpu", "cuda"])
_bootstrap_environment()
