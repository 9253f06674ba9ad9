"""Tensor fusion: many small allreduces as a few big ones (Horovod's fusion buffer).

A gradient step reduces hundreds of small tensors; each allreduce pays the per-message
latency (2(n-1) alpha on the ring) however small it is. `allreduce_coalesced` packs the
tensors into fused buffers, reduces each buffer once and unpacks the results:

    step    what                                                      who decides
    group   tensors by dtype, in order of first appearance            the tensors' dtypes
    pack    consecutive tensors of a dtype into a buffer until the     threshold (default
            next one would take it past `threshold` bytes; a tensor   64 MiB, Horovod's;
            larger than that gets a buffer of its own                  RINGPS_FUSION_THRESHOLD)
    reduce  one allreduce per buffer (any algorithm, any codec)        algorithm, compression
    unpack  each tensor's slice of its buffer back into the tensor     -

Every rank must pass tensors of the same sizes and dtypes in the same order (as for any
collective), so every rank builds the same buffers. Empty tensors take no room and are left
as they are. With `async_op=True` the call returns a FusionHandle at once and the work runs
on the communicator's fusion thread, in call order; `handle.wait()` returns the tensors.
Until it has, issue no other collective on that communicator (ranks must issue collectives
in the same order, and the fusion thread is one more issuer).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import api, arrays
from .errors import InputValueError, reject

DEFAULT_THRESHOLD = 64 * 1024 * 1024


@dataclass
class Bucket:
    """Tensors (their indices in the call) that share one fused buffer of one dtype."""
    dtype: str
    members: list[int] = field(default_factory=list)
    nbytes: int = 0


def plan(sizes: list[tuple[str, int]], threshold: int) -> list[Bucket]:
    """Buckets for tensors given as (dtype name, bytes), grouped by dtype in order of first
    appearance, each filled in order up to `threshold` bytes."""
    buckets: list[Bucket] = []
    open_bucket: dict[str, Bucket] = {}
    order: list[str] = []
    closed: dict[str, list[Bucket]] = {}
    for index, (dtype, nbytes) in enumerate(sizes):
        if dtype not in closed:
            closed[dtype], order = [], order + [dtype]
        bucket = open_bucket.get(dtype)
        if bucket is not None and bucket.nbytes + nbytes > threshold and bucket.members:
            closed[dtype].append(bucket)
            bucket = None
        if bucket is None:
            bucket = open_bucket[dtype] = Bucket(dtype)
        bucket.members.append(index)
        bucket.nbytes += nbytes
    for dtype in order:
        buckets += closed[dtype] + ([open_bucket[dtype]] if dtype in open_bucket else [])
    return buckets


def threshold_from_env() -> int:
    return int(os.environ.get("RINGPS_FUSION_THRESHOLD", DEFAULT_THRESHOLD))


def allreduce_coalesced(tensors, op="sum", algorithm="ring", comm=None, *, threshold=None,
                        compression=None, async_op=False, check=None):
    """Allreduce every tensor of `tensors` (numpy arrays or CPU torch tensors, any shapes and
    dtypes) in place through fused buffers of at most `threshold` bytes; returns the list,
    or a FusionHandle with async_op=True."""
    tensors = list(tensors)
    threshold = threshold_from_env() if threshold is None else threshold
    if threshold < 1:
        raise reject(InputValueError, "bad input", f"fusion threshold must be >= 1 byte, got "
                     f"{threshold}")
    views = [arrays.as_buffer(t) for t in tensors]      # bad input raises here, nothing sent
    comm = comm or api.default_comm()
    if not async_op:
        _run(tensors, views, op, algorithm, comm, threshold, compression, check)
        return tensors
    future = _executor(comm).submit(_run, tensors, views, op, algorithm, comm, threshold,
                                    compression, check)
    return FusionHandle(future, tensors)


def _run(tensors, views, op, algorithm, comm, threshold, compression, check) -> None:
    sizes = [(v.dtype.name, v.array.nbytes) for v in views]
    for bucket in plan(sizes, threshold):
        members = [i for i in bucket.members if len(views[i].array)]
        if not members:
            continue
        fused, flat = _fused_like(tensors[members[0]], sum(len(views[i].array) for i in members))
        offsets = np.cumsum([0] + [len(views[i].array) for i in members])
        for i, a, b in zip(members, offsets[:-1], offsets[1:]):
            flat[a:b] = views[i].array
        api.allreduce(fused, op=op, algorithm=algorithm, comm=comm, check=check,
                      **({"compression": compression, "key": _key(views, members)}
                         if compression is not None else {}))
        for i, a, b in zip(members, offsets[:-1], offsets[1:]):
            views[i].array[...] = flat[a:b]


def _key(views, members) -> tuple:
    """Whose `+ef` residual a fused buffer has: its tensors' addresses and sizes."""
    return ("fusion",) + tuple((views[i].array.__array_interface__["data"][0],
                                len(views[i].array)) for i in members)


def _fused_like(tensor, count: int):
    """(fused buffer of `tensor`'s kind and dtype, its flat storage view)."""
    if arrays._is_torch_tensor(tensor):
        import torch
        fused = torch.empty(count, dtype=tensor.dtype)
    else:
        fused = np.empty(count, dtype=tensor.dtype)
    return fused, arrays.as_buffer(fused).array


class FusionHandle:
    """An allreduce_coalesced in flight (Horovod's handle): wait() blocks until it is done
    and returns the tensors; it re-raises what the fused allreduce raised."""

    def __init__(self, future: Future, tensors):
        self._future, self.tensors = future, tensors

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None):
        self._future.result(timeout)
        return self.tensors


_executors: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _executor(comm) -> ThreadPoolExecutor:
    """One thread per communicator, so its async calls run in the order they were made."""
    with _lock:
        if id(comm) not in _executors:
            _executors[id(comm)] = ThreadPoolExecutor(1, thread_name_prefix="ringps-fusion")
        return _executors[id(comm)]
