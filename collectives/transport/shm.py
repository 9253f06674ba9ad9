"""Shared-memory transport: ranks of one node read each other's memory directly.

The CPU twin of the CUDA IPC transport (and of what NVLink gives NCCL). Every rank owns
segments that its node peers map into their own address space; a receive reduces (or copies)
straight out of the sender's segment into the destination, with no staging copy on the
receiving side and no bytes through MPI. Ranks on other nodes, user-tagged point-to-point
traffic and receives from any source go through the inner transport (MPI, or gloo under
torchrun), which also carries the control plane (metadata exchange, barrier).

Segments are anonymous memory files (memfd_create): a peer maps one by opening
/proc/<owner pid>/fd/<fd>, so nothing is ever named in /dev/shm, two jobs cannot collide,
and the kernel frees a segment when the last process that maps it exits, killed or not.
Every segment starts with a 64-byte line holding its random token; peers check it.

    segment               owner      holds
    control (one)         each rank  header line, `consumed` lines, segment table,
                                     one descriptor queue per peer (SLOTS lines each)
    channel (per peer)    sender     staged copies of sends to that peer (a byte ring)
    fanout (one)          sender     one staged copy read by several peers (isend_many)
    buffer (any number)   user       arrays from collectives.empty/zeros: sent with no copy

Every flag is an int64 on its own 64-byte line. Counters only grow (rotating sequence
values: slot seq % SLOTS is reused once its number has been consumed), so consecutive calls
need no barrier between them.

    a send of `nbytes` from rank s to rank d, k-th descriptor on that queue (seq = k + 1)
    step  who  what
    1     s    wait until d has consumed seq - SLOTS (the slot is free) and, for a copy,
               until the channel has room (d consumed the bytes there before)
    2     s    copy the piece into the channel (skipped when the array already lives in one
               of s's buffer segments: descriptor kind REF instead of COPY)
    3     s    write the slot's fields (kind, segment, token, offset, piece bytes, total,
               piece position), then, last, slot[SEQ] = seq
    4     d    sees slot[SEQ] == seq; checks total == its own receive size (a mismatch
               fails both ranks by name, never wrong data); maps the segment on first use
    5     d    dst[at:at+piece] = peer bytes, or combine(dst[...], peer bytes) in place
    6     d    consumed[s] = seq (in d's control segment): s may reuse the slot and bytes

When every rank of the communicator is on this node, the control segment ends with a board
(board.py, in C): small oneshot allreduces, the metadata check and barriers go through it in
one call each, not message by message.

Messages below RINGPS_SHM_MIN_BYTES (16 KB) go through the inner transport: MPI's C path
costs a few microseconds a message, this one (Python) some ten, which the copy it saves
repays only from about that size on. Both ends see the same size, so they agree on the path,
and each path keeps its own order.

With RINGPS_SHM_CMA=1, sends of CMA_MIN bytes or more skip step 2 where the kernel allows
cross-memory attach (process_vm_readv, probed when the communicator is made). It is off by
default: measured here (bench/CPU.md) the kernel's page-by-page copy lost to staging up to
16 MB and tied at 64 MB.
the descriptor (kind CMA) carries the buffer's address in s, and d copies, or reduces
CMA_PIECE bytes at a time through a small scratch, straight out of s's private memory; the
send completes, like a REF send, once d has consumed it. One copy instead of two, as MPI
libraries do for large messages (CMA, XPMEM, KNEM).

Large copied sends go as pieces of at most half a channel, so s copies piece k+1 while d
reduces piece k, and a channel never needs to hold a whole buffer. A copied send is complete (its
buffer reusable, as MPI defines it) once its last piece is copied; a REF send once d has
consumed it. Channels start small and grow (a new segment) up to RINGPS_SHM_BYTES when a
larger send finds them idle; the peer maps the new one when a descriptor first names it.

Memory ordering. The receiver must see the bytes and fields of a slot before its SEQ, and
the sender must see `consumed` before it overwrites bytes. On x86-64 (TSO) stores become
visible in program order and loads are not reordered with older loads; every store here is
a separate numpy call the C compiler cannot move across the next, and glibc's memcpy fences
its non-temporal stores (sfence) before returning, so program order is enough. On other
CPUs (ARM's weak order) a full fence from libatomic (C11 atomic_thread_fence, seq_cst)
goes before every flag store (release) and after every flag load that hands over data
(acquire); without libatomic, `auto` keeps such machines on MPI and `shm` refuses.

Waiting: every wait progresses all of this transport's pending transfers (so no rank can
block a peer by not reading), spins briefly, then yields its core (sched_yield) and, after
a few milliseconds without progress, sleeps in short steps up to 1 ms: more ranks than
cores never starve each other. Past the communicator's deadline it raises PeerTimeout
naming the rank it was waiting for.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import mmap
import os
import platform
import secrets
import socket
import struct
import time
import weakref
from collections import deque
from typing import Sequence

import numpy as np

from .. import watchdog
from . import board
from .base import Request, Transport, pause, spin_budget

LINE = 64                           # bytes: one cache line, one flag
WORDS = LINE // 8
SLOTS = 64                          # descriptors in flight per (sender, receiver)
MAX_SEGMENTS = 256                  # entries in a rank's segment table
MAGIC = 0x52494E4750534D31          # "RINGPSM1"
MIN_CHANNEL = 1 << 18               # a channel's first size
DEFAULT_MAX_CHANNEL = 16 << 20      # RINGPS_SHM_BYTES: the most a channel grows to
SPIN_SECONDS = 20e-6

# slot fields (int64 words of one descriptor line)
SEQ, KIND, SEGMENT, TOKEN, OFFSET, PIECE, TOTAL, AT = range(8)
COPY, REF, CMA = 1, 2, 3
CMA_MIN = 64 << 10                  # sends this large may be read from the sender's own memory
DEFAULT_MIN_BYTES = 16 << 10        # RINGPS_SHM_MIN_BYTES: smaller messages take MPI's C path
CMA_PIECE = 256 << 10               # a reduce reads the peer this much at a time (stays in L2)
FIELDS = struct.Struct("7q")       # KIND .. AT, written before SEQ
# segment table entry fields
T_FD, T_BYTES, T_TOKEN, T_PID = range(4)


# ---- memory ordering -------------------------------------------------------------------

def _fence_function():
    """None where program order is enough (x86-64), else libatomic's seq_cst fence."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return None
    name = ctypes.util.find_library("atomic")
    if name is None:
        raise OSError("no libatomic for memory fences on this CPU")
    fence = ctypes.CDLL(name).atomic_thread_fence
    fence.argtypes = [ctypes.c_int]
    return lambda: fence(5)             # memory_order_seq_cst


try:
    _FENCE = _fence_function()
    FENCE_PROBLEM = None
except (OSError, AttributeError) as exc:
    _FENCE, FENCE_PROBLEM = None, str(exc)


def _fence() -> None:
    if _FENCE is not None:
        _FENCE()


# ---- cross-memory attach (process_vm_readv) ---------------------------------------------

class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _vm_readv():
    try:
        function = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_ssize_t
    function.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                         ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong]
    return function


_VM_READV = _vm_readv()


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def read_peer(pid: int, address: int, dst: np.ndarray) -> None:
    """Copy len(dst) bytes at `address` in process `pid` into dst (one copy, by the kernel);
    raises OSError if the kernel refuses (no such process, or ptrace rules forbid it)."""
    done, total, base = 0, dst.nbytes, _address(dst)
    while done < total:
        local = _Iovec(base + done, total - done)
        remote = _Iovec(address + done, total - done)
        got = _VM_READV(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got <= 0:
            error = ctypes.get_errno()
            raise OSError(error, f"process_vm_readv from pid {pid}: {os.strerror(error)}")
        done += got


# ---- segments ----------------------------------------------------------------------------

class Segment:
    """An anonymous shared memory file owned by this process, mapped here."""

    def __init__(self, nbytes: int, what: str):
        self.fd = os.memfd_create(f"ringps-{what}", os.MFD_CLOEXEC)
        self.nbytes = LINE + nbytes
        os.ftruncate(self.fd, self.nbytes)
        self.map = mmap.mmap(self.fd, self.nbytes)
        self.token = secrets.randbits(62) + 1
        self.bytes = np.frombuffer(self.map, dtype=np.uint8)
        self.bytes[:8].view(np.int64)[0] = self.token
        self.data = self.bytes[LINE:]
        self.address = self.data.__array_interface__["data"][0]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _map_peer(pid: int, fd: int, nbytes: int, token: int) -> np.ndarray:
    """The data of a peer's segment, mapped here; raises OSError if it is not the one named."""
    handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)
    try:
        mapping = mmap.mmap(handle, nbytes)
    finally:
        os.close(handle)
    view = np.frombuffer(mapping, dtype=np.uint8)
    if int(view[:8].view(np.int64)[0]) != token:
        raise OSError(f"segment /proc/{pid}/fd/{fd} is not the one announced")
    return view[LINE:]


def host_identity() -> int:
    """A number equal on ranks that share this machine's memory (hostname and boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    digest = hashlib.sha256(f"{socket.gethostname()}/{boot}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


# ---- transfers ---------------------------------------------------------------------------

class _Send(Request):
    def __init__(self, transport, array: np.ndarray, peers: list[int]):
        super().__init__(transport, "send", peers[0], array.nbytes)
        self.peers = peers
        self.bytes = array.reshape(-1).view(np.uint8)
        self.view = memoryview(self.bytes)
        self.itemsize = array.itemsize
        self.at = 0                      # bytes published so far
        self.last_seq: dict[int, int] = {}
        self.ref = None                  # (segment id, token, offset) when it needs no copy
        self.waiting = ""                # what it waits for, for a timeout message

    def describe(self) -> str:
        return _describe(self)

    def awaited(self) -> list[int]:
        return list(self.peers)


class _Receive(Request):
    def __init__(self, transport, dst: np.ndarray, peer: int, combine=None):
        super().__init__(transport, "receive", peer, dst.nbytes)
        self.dst = dst.reshape(-1)
        self.view = memoryview(self.dst.view(np.uint8))
        self.combine = combine
        self.at = 0                      # bytes received so far

    def describe(self) -> str:
        return _describe(self)


class _Channel:
    """A byte ring in one of the sender's segments; pieces are freed in the order sent."""

    def __init__(self, segment_id: int, segment: Segment):
        self.segment_id, self.segment = segment_id, segment
        self.view = memoryview(segment.data)        # byte copies without numpy's overhead
        self.capacity = segment.nbytes - LINE
        self.head = self.tail = 0        # absolute byte positions: allocated, freed
        self.in_flight: deque = deque()  # (end position, [(peer, seq), ...])

    def allocate(self, nbytes: int) -> int | None:
        """Offset of `nbytes` contiguous bytes (64-aligned), or None if there is no room."""
        nbytes = -(-nbytes // LINE) * LINE
        position = self.head % self.capacity
        skip = self.capacity - position if position + nbytes > self.capacity else 0
        if self.head + skip + nbytes - self.tail > self.capacity:
            return None
        self.head += skip + nbytes
        return 0 if skip else position

    def release(self, consumed) -> None:
        while self.in_flight and all(consumed(p) >= s for p, s in self.in_flight[0][1]):
            self.tail = self.in_flight.popleft()[0]
        if not self.in_flight:
            self.head = self.tail = 0        # idle: the next piece starts at the beginning

    @property
    def idle(self) -> bool:
        return not self.in_flight


class ShmTransport(Transport):
    """Node peers through shared memory; everyone else through `inner`."""

    def __init__(self, inner: Transport, peers: list[int], control: Segment,
                 peer_controls: dict[int, np.ndarray], layout: dict, max_channel: int,
                 pids: dict[int, int], cma: bool, use_board: bool = False):
        self.inner = inner
        self.rank, self.size = inner.rank, inner.size
        self.peers = set(peers)
        self.control = control
        # flags as int64 memoryviews: a word read or written is one Python-level op
        self.ctl_bytes = memoryview(control.data)
        self.ctl = self.ctl_bytes.cast("q")
        self.peer_bytes = {p: memoryview(c) for p, c in peer_controls.items()}
        self.peer_ctl = {p: m.cast("q") for p, m in self.peer_bytes.items()}
        self.layout = layout
        self.max_channel = max_channel
        self.segments: dict[int, Segment] = {}       # mine, by id (channels and buffers)
        self.buffers: list[tuple[int, int, int]] = []   # (start, stop, id) of user buffers
        self.channels: dict[object, _Channel] = {}   # peer (or "fanout") -> channel
        self.mapped: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
        self.sent = {p: 0 for p in peers}            # descriptors written per peer
        self.received = {p: 0 for p in peers}        # descriptors consumed per peer
        self.sending: dict[int, deque] = {p: deque() for p in peers}
        self.receiving: dict[int, deque] = {p: deque() for p in peers}
        self.refs: list[_Send] = []                  # REF sends waiting for their reader
        self.pids = pids                             # node peer -> its process id
        watchdog.node_peers(pids.values())
        self.min_bytes = int(os.environ.get("RINGPS_SHM_MIN_BYTES", DEFAULT_MIN_BYTES))
        self.cma = cma                               # may read peers' private memory
        self.cma_scratch = np.empty(CMA_PIECE, np.uint8) if cma else None
        self.stats = {"copied": 0, "referenced": 0, "received": 0, "cma": 0}   # bytes
        self.spin = spin_budget(len(self.peers) + 1, SPIN_SECONDS)   # before a wait yields
        self.board = None             # every rank on this node: small calls in one C call
        self.board_chunk = board.chunk(inner)    # the longest a C wait lasts
        if use_board and len(self.peers) == self.size - 1 and board.usable(self.size):
            at = layout["board"]
            self.board = board.attach([control.address + at if p == self.rank
                                       else _address(peer_controls[p]) + at
                                       for p in range(self.size)], self.rank,
                                      (control.map, tuple(peer_controls.values())))
        self._finalizer = weakref.finalize(self, _close_all, self.segments, control,
                                           self.peer_ctl, self._consumed_word(self.rank),
                                           self.sent)

    @property
    def timeout(self) -> float:
        """One deadline for both transports (the inner one's)."""
        return self.inner.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.inner.timeout = seconds

    # ---- set-up ------------------------------------------------------------------------
    @classmethod
    def connect(cls, inner: Transport, node_of_rank: list[int] | None = None,
                max_channel: int | None = None) -> "tuple[ShmTransport | None, str]":
        """Collective over `inner`: map every node peer's control segment. Returns the
        transport, or None and the reason when some rank cannot (then no rank uses it)."""
        size, rank = inner.size, inner.rank
        if max_channel is None:
            max_channel = int(os.environ.get("RINGPS_SHM_BYTES", DEFAULT_MAX_CHANNEL))
        layout = _layout(size)
        control, problem = None, FENCE_PROBLEM
        if problem is None:
            try:
                control = Segment(layout["bytes"], "control")
            except (OSError, AttributeError) as exc:
                problem = f"memfd_create failed: {exc}"
        node = -1 if node_of_rank is None else node_of_rank[rank]
        probe = np.array([secrets.randbits(62) + 1], dtype=np.int64)   # read by peers (CMA)
        row = np.array([host_identity(), node, os.getpid(),
                        control.fd if control else -1, control.token if control else 0,
                        0 if control else 1, _address(probe), probe[0]], dtype=np.int64)
        table = inner.exchange(row)
        peers = [p for p in range(size) if p != rank and table[p, 0] == row[0]
                 and table[p, 1] == node]
        mapped, failed = {}, problem is not None or bool(table[:, 5].any())
        for p in peers if not failed else ():
            try:
                mapped[p] = _map_peer(int(table[p, 2]), int(table[p, 3]), LINE + layout["bytes"],
                                      int(table[p, 4]))
            except OSError as exc:
                problem, failed = f"cannot map rank {p}'s segment ({exc})", True
                break
        cma = _VM_READV is not None and os.environ.get("RINGPS_SHM_CMA", "0") == "1"
        for p in peers if cma and not failed else ():
            seen = np.zeros(1, np.int64)
            try:
                read_peer(int(table[p, 2]), int(table[p, 6]), seen.view(np.uint8))
                cma = int(seen[0]) == int(table[p, 7])
            except OSError:
                cma = False
        no_board = board.PROBLEM is not None or os.environ.get("RINGPS_SHM_BOARD", "1") == "0"
        verdict = inner.exchange(np.array([int(failed), int(not cma), int(no_board)],
                                          dtype=np.int64))
        if control is not None:
            control.close()                  # every peer has mapped it (or given up)
        if verdict[:, 0].any():
            bad = [r for r in range(size) if verdict[r, 0]]
            return None, problem or (f"rank(s) {', '.join(map(str, bad))} could not map "
                                     f"shared memory")
        pids = {p: int(table[p, 2]) for p in peers}
        return cls(inner, peers, control, mapped, layout, max_channel, pids,
                   cma=not verdict[:, 1].any(), use_board=not verdict[:, 2].any()), ""

    # ---- addresses in the control segment ------------------------------------------------
    def _consumed_word(self, sender: int) -> int:
        return self.layout["consumed"] + sender * WORDS

    def _slot_word(self, receiver: int, seq: int) -> int:
        return self.layout["queues"] + (receiver * SLOTS + seq % SLOTS) * WORDS

    def _consumed_by(self, peer: int) -> int:
        """How many of my descriptors `peer` has consumed (read from its control segment)."""
        value = self.peer_ctl[peer][self._consumed_word(self.rank)]
        _fence()
        return value

    # ---- my segments ---------------------------------------------------------------------
    def _new_segment(self, nbytes: int, what: str) -> tuple[int, Segment]:
        ids = [i for i in range(1, MAX_SEGMENTS) if i not in self.segments]
        if not ids:
            raise MemoryError(f"ringps: rank {self.rank}: more than {MAX_SEGMENTS - 1} shared "
                              f"segments in use")
        segment_id, segment = ids[0], Segment(nbytes, what)
        entry = self.layout["table"] + segment_id * WORDS
        struct.pack_into("4q", self.ctl_bytes, 8 * (entry + T_FD), segment.fd, segment.nbytes,
                         segment.token, os.getpid())
        self.segments[segment_id] = segment
        return segment_id, segment

    def _drop_segment(self, segment_id: int) -> None:
        segment = self.segments.pop(segment_id)
        self.ctl[self.layout["table"] + segment_id * WORDS + T_TOKEN] = 0
        segment.close()

    def buffer(self, nbytes: int) -> np.ndarray:
        """Bytes in a segment of mine that peers read without a copy (collectives.empty)."""
        segment_id, segment = self._new_segment(max(nbytes, 1), "buffer")
        start = segment.address
        self.buffers.append((start, start + segment.nbytes - LINE, segment_id))
        weakref.finalize(segment.map, self._forget_buffer, segment_id, start)
        view = segment.data[:nbytes]
        segment.map = segment.bytes = segment.data = None   # only the user's views keep
        return view                                         # the mapping alive

    def _forget_buffer(self, segment_id: int, start: int) -> None:
        self.buffers = [b for b in self.buffers if b[0] != start]
        if segment_id in self.segments:
            self._drop_segment(segment_id)

    def _resident(self, data: np.ndarray):
        """(segment id, token, offset) if `data` lies in one of my buffer segments."""
        if not self.buffers or not data.nbytes:
            return None
        address = data.__array_interface__["data"][0]
        for start, stop, segment_id in self.buffers:
            if start <= address and address + data.nbytes <= stop:
                return segment_id, self.segments[segment_id].token, address - start
        return None

    def _channel(self, key, want: int) -> _Channel:
        """The channel for `key`, grown (a new segment) if `want` bytes do not fit in half of
        it and it is idle."""
        channel = self.channels.get(key)
        if channel is not None and (2 * want <= channel.capacity
                                    or channel.capacity >= self.max_channel):
            return channel
        if channel is not None:
            channel.release(self._consumed_by)
            if not channel.idle:
                return channel
        capacity = max(MIN_CHANNEL, channel.capacity if channel else 0)
        while capacity < 2 * want and capacity < self.max_channel:
            capacity *= 2
        capacity = min(capacity, max(self.max_channel, MIN_CHANNEL))
        if channel is not None:
            self._drop_segment(channel.segment_id)
        channel = self.channels[key] = _Channel(*self._new_segment(capacity, "channel"))
        return channel

    # ---- the transport seam --------------------------------------------------------------
    def _local(self, peer, nbytes: int) -> bool:
        """Through shared memory? Node peers, messages of at least min_bytes (both ends of a
        message see the same size, so both choose the same path; each path keeps order)."""
        return peer in self.peers and nbytes >= self.min_bytes

    def isend(self, array, peer, tag=None):
        self._usable()
        if tag is not None or not self._local(peer, array.nbytes):
            return self.inner.isend(array, peer, tag)
        return self._post_send(array, [peer])

    def isend_many(self, array, peers):
        """One send of `array` to each of `peers`; node peers read one staged copy."""
        self._usable()
        local = [p for p in peers if self._local(p, array.nbytes)]
        requests = [self.inner.isend(array, p) for p in peers if p not in local]
        if local:
            requests.append(self._post_send(array, local))
        return requests

    def _post_send(self, array, peers) -> _Send:
        send = _Send(self, np.ascontiguousarray(array), peers)
        send.ref = self._resident(send.bytes)
        if send.ref is None and self.cma and send.nbytes >= CMA_MIN:
            send.ref = (0, 0, _address(send.bytes))     # read from my private memory
        for p in peers:
            self.sending[p].append(send)
        self._pump(peers)
        return send

    def irecv(self, array, peer, tag=None):
        self._usable()
        if tag is not None or not self._local(peer, array.nbytes):
            return self.inner.irecv(array, peer, tag)
        return self._post_receive(_Receive(self, array, peer))

    def irecv_reduce(self, dst, peer, scratch, combine):
        self._usable()
        if not self._local(peer, dst.nbytes):
            return self.inner.irecv_reduce(dst, peer, scratch, combine)
        return self._post_receive(_Receive(self, dst, peer, combine))

    def _post_receive(self, receive: _Receive) -> _Receive:
        queue = self.receiving[receive.peer]
        queue.append(receive)
        if len(queue) == 1:
            self._pull(receive.peer)
        return receive

    # ---- progress ------------------------------------------------------------------------
    def _push(self, send: _Send) -> bool:
        """Publish what can be published of `send` now (it must head every queue it is in).
        Returns whether anything moved."""
        peers, sending = send.peers, self.sending
        if sending[peers[0]][0] is not send or (len(peers) > 1 and any(
                sending[p][0] is not send for p in peers)):
            return False
        moved = False
        while not send.done:
            free = min(self._consumed_by(p) + SLOTS - self.sent[p] for p in peers) \
                if len(peers) > 1 else self._consumed_by(peers[0]) + SLOTS - self.sent[peers[0]]
            if free <= 0:
                send.waiting = "a free descriptor slot"
                return moved
            if send.ref is not None:
                segment_id, token, offset = send.ref
                kind = REF if segment_id else CMA
                self._publish(send, kind, segment_id, token, offset, send.nbytes)
                self.stats["referenced" if segment_id else "cma"] += send.nbytes
                self.refs.append(send)
                send.at = send.nbytes
                self._finish_publishing(send)
                return True
            remaining = send.nbytes - send.at
            channel = self._channel(peers[0] if len(peers) == 1 else "fanout", remaining)
            piece = min(remaining, max(channel.capacity // 2 // send.itemsize * send.itemsize,
                                       send.itemsize))
            offset = channel.allocate(piece)
            if offset is None:
                channel.release(self._consumed_by)
                offset = channel.allocate(piece)
            if offset is None:
                send.waiting = "room in the channel (the reader has not consumed earlier bytes)"
                return moved
            channel.view[offset:offset + piece] = send.view[send.at:send.at + piece]
            seqs = self._publish(send, COPY, channel.segment_id, channel.segment.token, offset,
                                 piece)
            channel.in_flight.append((channel.head, seqs))
            self.stats["copied"] += piece
            send.at += piece
            moved = True
            if send.at >= send.nbytes:
                self._finish_publishing(send)
                send.done = True        # copied: the caller's buffer is free again
        return moved

    def _publish(self, send: _Send, kind: int, segment_id: int, token: int, offset: int,
                 piece: int) -> list[tuple[int, int]]:
        seqs = []
        for p in send.peers:
            seq = self.sent[p] = self.sent[p] + 1
            word = self._slot_word(p, seq)
            FIELDS.pack_into(self.ctl_bytes, 8 * (word + KIND), kind, segment_id, token, offset,
                             piece, send.nbytes, send.at)
            _fence()
            self.ctl[word + SEQ] = seq
            send.last_seq[p] = seq
            seqs.append((p, seq))
        return seqs

    def _finish_publishing(self, send: _Send) -> None:
        """`send` is out: it leaves the head of its queues (the next heads move in _pump)."""
        for p in send.peers:
            self.sending[p].popleft()

    def _pump(self, peers) -> bool:
        """Publish the heads of these peers' send queues, one after another, as far as the
        slots and channels allow (a loop, not a recursion: a call may queue thousands)."""
        moved, todo = False, list(peers)
        while todo:
            queue = self.sending[todo.pop()]
            while queue:
                send = queue[0]
                moved |= self._push(send)
                if queue and queue[0] is send:
                    break                       # blocked: a slot, room, or another queue
                if len(send.peers) > 1:         # a fanout send out may free other queues
                    todo.extend(send.peers)
        return moved

    def _pull(self, peer: int) -> bool:
        """Consume what `peer` has published for the receives posted to it, in order."""
        queue, moved = self.receiving[peer], False
        ctl, raw = self.peer_ctl[peer], self.peer_bytes[peer]
        while queue:
            receive = queue[0]
            seq = self.received[peer] + 1
            word = self.layout["queues"] + (self.rank * SLOTS + seq % SLOTS) * WORDS
            if ctl[word + SEQ] != seq:
                return moved
            _fence()
            kind, segment_id, token, offset, piece, total, at = FIELDS.unpack_from(
                raw, 8 * (word + KIND))
            if total != receive.nbytes or at != receive.at:
                from ..errors import MismatchError
                self._fail(f"ringps: rank {self.rank}: {self.activity}: rank {peer} sent "
                           f"{total} bytes where {receive.nbytes} were expected", [peer])
                raise MismatchError(f"ringps: rank {self.rank}: {self.activity}: rank {peer} "
                                    f"sent {total} bytes where {receive.nbytes} were expected: "
                                    f"the ranks called with different lengths or collectives "
                                    f"(check=False skips the metadata check that names them)")
            if piece and kind == CMA:
                self._read_private(peer, offset, receive, at, piece)
            elif piece:
                source = self._peer_bytes(peer, segment_id, token)[offset:offset + piece]
                if receive.combine is None:
                    receive.view[at:at + piece] = source
                else:
                    dtype = receive.dst.dtype
                    target = receive.dst.view(np.uint8)[at:at + piece]
                    receive.combine(target.view(dtype), source.view(dtype))
            _fence()
            self.ctl[self._consumed_word(peer)] = seq
            self.received[peer] = seq
            self.stats["received"] += piece
            receive.at += piece
            moved = True
            if receive.at >= receive.nbytes:
                receive.done = True
                queue.popleft()
                if receive.on_complete is not None:
                    receive.on_complete()
        return moved

    def _read_private(self, peer: int, address: int, receive: _Receive, at: int,
                      nbytes: int) -> None:
        """A CMA descriptor: copy, or reduce through the scratch piece by piece, straight out
        of the peer's own memory."""
        target = receive.dst.view(np.uint8)[at:at + nbytes]
        try:
            if receive.combine is None:
                read_peer(self.pids[peer], address, target)
                return
            dtype, scratch = receive.dst.dtype, self.cma_scratch
            for start in range(0, nbytes, CMA_PIECE):
                stop = min(start + CMA_PIECE, nbytes)
                read_peer(self.pids[peer], address + start, scratch[:stop - start])
                receive.combine(target[start:stop].view(dtype),
                                scratch[:stop - start].view(dtype))
        except OSError as exc:
            raise self._fail(f"ringps: rank {self.rank} cannot read rank {peer}'s memory "
                             f"({exc})") from None

    def _peer_bytes(self, peer: int, segment_id: int, token: int) -> np.ndarray:
        cached = self.mapped.get((peer, segment_id))
        if cached is not None and cached[0] == token:
            return cached[1]
        entry = self.layout["table"] + segment_id * WORDS
        fd, nbytes, listed, pid = struct.unpack_from("4q", self.peer_bytes[peer], 8 * entry)
        if listed != token:
            raise self._fail(f"ringps: rank {self.rank}: rank {peer} named a shared segment it "
                             f"no longer holds")
        try:
            view = _map_peer(pid, fd, nbytes, token)
        except OSError as exc:
            raise self._fail(f"ringps: rank {self.rank} cannot map rank {peer}'s shared "
                             f"memory ({exc})") from None
        self.mapped[(peer, segment_id)] = (token, view)
        return view

    def _busy(self) -> bool:
        """Whether any shared-memory transfer is still pending (then every wait, even one
        for inner requests only, must keep it moving)."""
        return (any(self.sending.values()) or any(self.receiving.values())
                or bool(self.refs))

    def _progress(self) -> bool:
        moved = False
        for peer, queue in self.receiving.items():
            if queue:
                moved |= self._pull(peer)
        busy = [peer for peer, queue in self.sending.items() if queue]
        if busy:
            moved |= self._pump(busy)
        if self.refs:
            still = []
            for send in self.refs:
                if all(self._consumed_by(p) >= s for p, s in send.last_seq.items()):
                    send.done = moved = True
                else:
                    still.append(send)
            self.refs = still
        return moved

    def waitall(self, requests: Sequence[Request]) -> None:
        mine = [r for r in requests if not r.done and r.handle is self]
        others = [r for r in requests if not r.done and r.handle is not self]
        if not mine and (not others or not self._busy()):
            if others:                  # nothing of ours pending that a peer may wait for
                self.inner.waitall(others)
            return
        start = last = time.monotonic()
        remote = len(self.peers) < self.size - 1     # peers on other nodes: keep MPI moving
        while True:
            moved = self._progress()
            if remote:
                self.inner.progress()
            if others and self.inner.test(others):
                others, moved = [], True
            if not others and all(r.done for r in mine):
                return
            now = time.monotonic()
            if moved:
                last = now
            else:
                pause(now - last, self.spin)
            self._overdue(start, now, lambda: [r for r in mine + others if not r.done])

    def test(self, requests: Sequence[Request]) -> bool:
        self._progress()
        others = [r for r in requests if not r.done and r.handle is not self]
        return (not others or self.inner.test(others)) and all(
            r.done for r in requests if r.handle is self)

    def begin(self, collective: str, detail: str = "") -> None:
        """Number the call here and in `inner` (whose waits name it too), in one step: the
        board's small calls take a few microseconds in all."""
        inner = self.inner
        if self.broken or inner.broken:
            self._usable()
            inner._usable()
        self.calls = inner.calls = inner.calls + 1
        self.doing = inner.doing = (collective, detail)

    def exchange(self, values):
        """Through the board when every rank is on this node (one C call), else `inner`'s."""
        values = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
        if self.board is None or values.size > board.MAX_VALUES:
            return self.inner.exchange(values)
        self._usable()
        return board.exchange(self, values)

    def barrier(self) -> None:
        table = self.exchange(np.zeros(1, dtype=np.int64))
        if table.any():         # a peer posted something else to the board: not a barrier
            from ..errors import MismatchError
            others = [r for r in range(self.size) if table[r].any()]
            raise MismatchError(f"ringps: rank {self.rank} is in a barrier while rank"
                                f"{'s' * (len(others) > 1)} {', '.join(map(str, others))} "
                                f"called something else")

    def close(self) -> None:
        """Release my segments (peers that mapped them keep them until they let go), once
        peers have read what I sent (see _close_all)."""
        self._finalizer()
        release_lingering()

    def describe(self) -> dict:
        return {**self.inner.describe(), "transport": "shm",
                "shm_peers": len(self.peers)}


def _describe(request) -> str:
    """What a stuck shared-memory transfer waits for, in the MPI transport's words."""
    if request.kind == "send":
        return (f"send {request.nbytes} bytes to rank{'s' * (len(request.peers) > 1)} "
                f"{', '.join(map(str, request.peers))} ({request.waiting or 'not read yet'})")
    return f"receive {request.nbytes} bytes from rank {request.peer} ({request.at} arrived)"


def _layout(size: int) -> dict:
    """Word offsets in a control segment for a communicator of `size` ranks."""
    consumed = WORDS
    table = consumed + size * WORDS
    queues = table + MAX_SEGMENTS * WORDS
    words = queues + size * SLOTS * WORDS
    return {"consumed": consumed, "table": table, "queues": queues, "board": words * 8,
            "bytes": words * 8 + board.nbytes()}


_lingering: list = []    # closed transports whose last bytes a peer has yet to read


def _close_all(segments: dict, control: Segment, peer_ctl: dict, word: int, sent: dict
               ) -> None:
    """Close my segments' files, once every peer has consumed what I published: a peer that
    has not yet mapped a channel opens it through /proc/<my pid>/fd, so closing it under a
    peer still reading a finished send (close() right after a collective, as torch's
    destroy_process_group does) would fail that peer. Until then the transport lingers and
    is retried at the next close; process exit ends it anyway."""
    _lingering.append((segments, control, peer_ctl, word, sent))
    release_lingering()


def release_lingering() -> None:
    """Close the segments of closed transports whose peers have now read everything."""
    for entry in list(_lingering):
        segments, control, peer_ctl, word, sent = entry
        if any(peer_ctl[p][word] < n for p, n in sent.items()):
            continue
        _lingering.remove(entry)
        for segment in segments.values():
            segment.close()
        segments.clear()
        control.close()
