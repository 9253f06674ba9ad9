"""CUDA IPC transport: ranks on one node read each other's device buffers directly.

What NVLink gives NCCL, CUDA IPC gives processes: a rank maps a peer's device allocation
(cudaIpcOpenMemHandle, with peer access enabled lazily, so ranks on different GPUs of a node
and ranks sharing one GPU both work) and copies or reduces straight out of it. MPI carries
only small tokens, in order:

    send of a device buffer to a peer on the node
      sender    stream sync (the bytes are ready); token {IPC, nbytes, offset, handle};
                the send completes when the peer's ack arrives (it has read the bytes)
      receiver  token -> open the handle (cached by its 64 bytes) -> copy, or reduce with the
                fused kernel (dst = dst op peer, kernels.py), on the current stream; sync; ack
    anything else (a host buffer, a peer on another node, an empty buffer)
      sender    token {BYTES, nbytes}; then the bytes over MPI from pinned host memory
                (device buffers are staged, unless the MPI library is CUDA-aware)
      receiver  token -> receive into pinned staging (or the host buffer itself) -> copy or
                reduce into the destination

The transport duplicates its communicator. Sends and receives between two ranks are numbered
(both sides count), and each transfer's data and ack use a tag made from its number, so
tokens may be handled in any order without a reply landing on the wrong transfer. Waits
poll, and time out naming the peer, like the MPI transport, whose control plane (metadata
exchange, barrier) this one reuses.
"""
from __future__ import annotations

import ctypes
import time
from typing import Sequence

import numpy as np
from mpi4py import MPI

from ..arrays import is_device
from .base import Request, Transport
from .mpi import MPITransport, _bytes

TOKEN = 21
DATA_BASE, ACK_BASE, NUMBERS = 20000, 26000, 6000
IPC, BYTES = 1, 2
TOKEN_WORDS = 11            # kind, nbytes, offset, 8 words of handle


class _AddressRange:
    """cuMemGetAddressRange: the allocation a pointer lies in (IPC handles name allocations,
    and pooled allocators hand out pieces of them)."""

    def __init__(self):
        self._lib = ctypes.CDLL("libcuda.so.1")
        self._fn = self._lib.cuMemGetAddressRange_v2

    def __call__(self, ptr: int) -> tuple[int, int]:
        base, size = ctypes.c_uint64(), ctypes.c_size_t()
        rc = self._fn(ctypes.byref(base), ctypes.byref(size), ctypes.c_uint64(ptr))
        if rc != 0:
            raise RuntimeError(f"ringps: cuMemGetAddressRange failed ({rc}) for {ptr:#x}")
        return base.value, size.value


def cuda_aware() -> bool:
    """Whether MPI may be handed device memory: RINGPS_CUDA_AWARE=1/0 decides; otherwise ask
    the library (MPIX_Query_cuda_support, exported by Open MPI and MPICH; mpi4py does not
    wrap it)."""
    import os
    forced = os.environ.get("RINGPS_CUDA_AWARE")
    if forced not in (None, ""):
        return forced.lower() not in ("0", "false", "no", "off")
    try:
        return bool(ctypes.CDLL(None).MPIX_Query_cuda_support())
    except (AttributeError, OSError):
        return False


_OPENED: dict[bytes, int] = {}     # peer IPC handles opened by this process (one cache for
                                   # every transport, as torch keeps one)


def _sync() -> None:
    import cupy
    cupy.cuda.get_current_stream().synchronize()


class _Transfer(Request):
    """A transfer in steps: `progress()` moves it on and says whether it is done."""

    def __init__(self, transport, kind: str, peer: int, nbytes: int):
        super().__init__(None, kind, peer, nbytes)
        self.transport = transport
        self.pending: list = []          # MPI requests this step waits for
        self.keep: list = []             # buffers those requests use

    def _ready(self) -> bool:
        return not self.pending or MPI.Request.Testall(self.pending)


class _Send(_Transfer):
    def __init__(self, transport, array, peer: int, number: int):
        super().__init__(transport, "send", peer, array.nbytes)
        t = transport
        token = np.zeros(TOKEN_WORDS, dtype=np.int64)
        handle = t.export(array) if is_device(array) and t.same_node[peer] and array.nbytes \
            else None
        if handle is not None:
            base, handle = handle
            token[:3] = IPC, array.nbytes, array.data.ptr - base
            token[3:] = np.frombuffer(bytes(handle), dtype=np.int64)
            ack = np.zeros(1, dtype=np.int64)
            self.pending = [t.comm.Isend(token, peer, TOKEN),
                            t.comm.Irecv(ack, peer, ACK_BASE + number % NUMBERS)]
            self.keep = [token, ack, array]
        else:
            token[:2] = BYTES, array.nbytes
            if is_device(array) and not t.cuda_aware:
                staged = t.pinned(array.nbytes)
                array.view(np.uint8).get(out=staged)      # synchronous: staged is complete
                payload = [staged, MPI.BYTE]
            elif is_device(array):
                _sync()                                   # MPI reads it once the kernels ran
                payload = [array.view(np.uint8), MPI.BYTE]
            else:
                payload = _bytes(array)
            self.pending = [t.comm.Isend(token, peer, TOKEN),
                            t.comm.Isend(payload, peer, DATA_BASE + number % NUMBERS)]
            self.keep = [token, payload]

    def progress(self) -> bool:
        return self._ready()


class _Receive(_Transfer):
    def __init__(self, transport, dst, peer: int, number: int, scratch=None, combine=None):
        super().__init__(transport, "receive", peer, dst.nbytes)
        self.dst, self.number, self.scratch, self.combine = dst, number, scratch, combine
        self.token = np.zeros(TOKEN_WORDS, dtype=np.int64)
        self.pending = [transport.comm.Irecv(self.token, peer, TOKEN)]
        self.step = self._on_token
        self.staged = None

    def progress(self) -> bool:
        while self.step is not None and self._ready():
            self.step()
        return self.step is None

    def _on_token(self) -> None:
        kind, nbytes = int(self.token[0]), int(self.token[1])
        if nbytes != self.dst.nbytes:
            self._drain(kind, nbytes)
            raise self.transport._fail(
                f"ringps: rank {self.transport.rank}: rank {self.peer} sent {nbytes} bytes where "
                f"{self.dst.nbytes} were expected (ranks disagree on the buffer)")
        if kind == IPC:
            self._from_peer_memory(int(self.token[2]), self.token[3:].tobytes())
            return
        t = self.transport
        into = self.dst if self.combine is None else self.scratch
        if is_device(into) and not t.cuda_aware:
            self.staged = t.pinned(nbytes)
            target = [self.staged, MPI.BYTE]
        elif is_device(into):
            _sync()                         # no queued kernel may still read this scratch
            target = [into.view(np.uint8), MPI.BYTE]
        else:
            target = _bytes(into)
        self.pending = [t.comm.Irecv(target, self.peer, DATA_BASE + self.number % NUMBERS)]
        self.keep = [target]
        self.step = self._on_bytes

    def _drain(self, kind: int, nbytes: int) -> None:
        """Take the mismatched transfer off the wire (its bytes, or an ack for its IPC
        token), so no later transfer between these ranks meets it."""
        t = self.transport
        if kind == IPC:
            t.comm.Send(np.ones(1, dtype=np.int64), self.peer,
                        ACK_BASE + self.number % NUMBERS)
        else:
            t.comm.Recv([np.empty(nbytes, np.uint8), MPI.BYTE], self.peer,
                        DATA_BASE + self.number % NUMBERS)

    def _on_bytes(self) -> None:
        into = self.dst if self.combine is None else self.scratch
        if self.staged is not None:
            into.view(np.uint8).set(self.staged)
            _sync()                         # set() is asynchronous; staged is reused after
        if self.combine is not None:
            self.combine(self.dst, self.scratch)
        self.step = None

    def _from_peer_memory(self, offset: int, handle: bytes) -> None:
        t = self.transport
        try:
            peer = t.peer_array(handle, offset, self.dst)
        except Exception as exc:            # e.g. no peer access between these GPUs
            raise t._fail(f"ringps: rank {t.rank} cannot map rank {self.peer}'s device "
                          f"memory through CUDA IPC ({exc})") from None
        if self.combine is None:
            if is_device(self.dst):
                self.dst[...] = peer
            else:
                peer.get(out=self.dst)
        elif is_device(self.dst):
            self.combine(self.dst, peer)             # fused: reads the peer's memory once
        else:
            peer.get(out=self.scratch)
            self.combine(self.dst, self.scratch)
        _sync()
        ack = np.ones(1, dtype=np.int64)
        self.pending = [t.comm.Isend(ack, self.peer, ACK_BASE + self.number % NUMBERS)]
        self.keep = [ack]
        self.step = self._acked

    def _acked(self) -> None:
        self.step = None


class CudaIpcTransport(Transport):
    def __init__(self, comm: "MPI.Comm", timeout: float, node_of_rank: list[int]):
        """Collective over `comm` (it is duplicated, so tags never meet anyone else's)."""
        self.comm = comm = comm.Dup()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = timeout
        self.control = MPITransport(comm, timeout)
        self.same_node = [node_of_rank[p] == node_of_rank[self.rank] for p in range(self.size)]
        self.sent = [0] * self.size
        self.received = [0] * self.size
        self.cuda_aware = cuda_aware()
        self._address_range = None
        self._pinned: list[np.ndarray] = []

    # -- helpers ----------------------------------------------------------------------------
    def address_range(self, ptr: int) -> tuple[int, int]:
        if self._address_range is None:
            self._address_range = _AddressRange()
        return self._address_range(ptr)

    def pinned(self, nbytes: int) -> np.ndarray:
        from ..arrays import pinned
        return pinned(nbytes, np.uint8)

    def export(self, array):
        """(allocation base, IPC handle) of a device array, after its pending work is done;
        None where the allocation cannot be exported (stream-ordered pools), which sends
        the bytes over MPI instead."""
        import cupy
        _sync()
        base, _ = self.address_range(array.data.ptr)
        try:
            return base, cupy.cuda.runtime.ipcGetMemHandle(base)
        except cupy.cuda.runtime.CUDARuntimeError:
            return None

    def peer_array(self, handle: bytes, offset: int, like):
        """A CuPy view, on this rank's device, of a peer's device memory (each handle is
        opened once per process, then cached)."""
        import cupy
        base = _OPENED.get(handle)
        if base is None:
            base = _OPENED[handle] = cupy.cuda.runtime.ipcOpenMemHandle(
                handle, cupy.cuda.runtime.cudaIpcMemLazyEnablePeerAccess)
        memory = cupy.cuda.UnownedMemory(base + offset, like.nbytes, self,
                                         device_id=cupy.cuda.runtime.getDevice())
        return cupy.ndarray(like.shape, dtype=like.dtype,
                            memptr=cupy.cuda.MemoryPointer(memory, 0))

    # -- the transport seam -----------------------------------------------------------------
    def isend(self, array, peer, tag=None):
        self._usable()
        if tag is not None:
            raise ValueError("ringps: the CUDA IPC transport carries collective traffic only")
        number = self.sent[peer]
        self.sent[peer] += 1
        return _Send(self, array, peer, number)

    def irecv(self, array, peer, tag=None):
        self._usable()
        if tag is not None or peer is None:
            raise ValueError("ringps: the CUDA IPC transport receives collective traffic "
                             "from a named peer only")
        number = self.received[peer]
        self.received[peer] += 1
        return _Receive(self, array, peer, number)

    def irecv_reduce(self, dst, peer, scratch, combine):
        self._usable()
        number = self.received[peer]
        self.received[peer] += 1
        return _Receive(self, dst, peer, number, scratch, combine)

    def waitall(self, requests: Sequence[Request]) -> None:
        pending = [r for r in requests if not r.done]
        start = time.monotonic()
        while pending:
            pending = [r for r in pending if not r.progress()]
            if not pending:
                break
            self._overdue(start, time.monotonic(), lambda: pending)
            time.sleep(0)
        for r in requests:
            if not r.done:
                r.done = True
                r.keep = r.pending = []

    def begin(self, collective, detail=""):
        self.control.begin(collective, detail)
        self.calls, self.doing = self.control.calls, self.control.doing

    def exchange(self, values):
        return self.control.exchange(values)

    def barrier(self) -> None:
        self.control.barrier()

    def describe(self) -> dict:
        return {**self.control.describe(), "device_transport": "cuda-ipc",
                "cuda_aware_mpi": self.cuda_aware}
