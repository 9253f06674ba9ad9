"""The public calls: validate locally, agree across ranks, run the chosen algorithm in place.

Every collective goes through `_run`, so validation, the metadata check and the dispatch
through the registry are written once. Buffers are reduced in place and returned as given
(numpy array or CPU torch tensor).
"""
from __future__ import annotations

import os

import numpy as np

from . import arrays, dtypes, ops, partition
from .check import NOT_APPLICABLE, agree, explain
from .check import row as check_row
from .context import Context
from .errors import InputError, InputTypeError, InputValueError, reject
from .registry import CHANGES, COLLECTIVES
from .transport import board

_default = None


def init(comm=None, **settings):
    """Set (and return) the default Communicator: an mpi4py communicator or a Communicator.

    settings: ranks_per_node, servers, placement, timeout, rings, transport (see Communicator).
    With servers=S (or RINGPS_SERVERS=S) S ranks become parameter-server shards: on them
    this call serves until every worker has finished, then ends the process cleanly; on
    the workers it returns the workers' Communicator, on which every algorithm runs and
    through which `ps` and `hierarchical` reach the servers."""
    global _default
    from .comm import Communicator
    world = comm if isinstance(comm, Communicator) else Communicator(comm, **settings)
    if world.server_ranks:
        from ps import service            # the layer above, only when servers are asked for
        _default = service.serve_or_attach(world)
    else:
        _default = world
    return _default


def default_comm():
    return _default if _default is not None else init()


def rank(comm=None) -> int:
    return (comm or default_comm()).rank


def size(comm=None) -> int:
    return (comm or default_comm()).size


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.lower() not in ("0", "false", "no", "off")


_settings: dict = {}


def _defaults() -> tuple[bool, int]:
    """RINGPS_CHECK and RINGPS_SEGMENT_BYTES, read once (they are per-job settings)."""
    if not _settings:
        _settings["check"] = _env_flag("RINGPS_CHECK", True)
        _settings["segment_bytes"] = int(os.environ.get("RINGPS_SEGMENT_BYTES",
                                                        partition.DEFAULT_SEGMENT_BYTES))
    return _settings["check"], _settings["segment_bytes"]


REDUCING = ("allreduce", "reduce_scatter", "reduce")


def communicator(comm):
    """`comm`, or the default one; anything else is refused here, on the caller's rank (with
    no communicator there is no one to tell)."""
    if comm is None:
        return default_comm()
    if type(comm) in _communicator_types:
        return comm
    if not all(hasattr(comm, name) for name in ("transport", "rank", "size")):
        raise TypeError(f"ringps: comm must be a ringps Communicator (collectives.init() or "
                        f"collectives.Communicator(mpi_comm)), got {type(comm).__name__}")
    _communicator_types.add(type(comm))
    return comm


_communicator_types: set = set()    # classes that passed the check once (the hot path)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _checked_arguments(collective: str, registry, buffer, op, algorithm, root, segment_bytes,
                       size: int):
    """The reduce op (None where the collective takes none); raises InputError for any
    argument unfit on this rank, before anything is exchanged."""
    reduce_op = None
    if collective in REDUCING:
        if op is None:
            raise reject(InputValueError, "no op given",
                         f"{collective} needs a reduce op (one of {', '.join(ops.OP_NAMES)}), "
                         f"got None")
        reduce_op = ops.lookup(op)
        ops.check_dtype(reduce_op, buffer.dtype)
    if not isinstance(algorithm, str) or algorithm not in registry:
        raise reject(InputValueError, "unknown algorithm",
                     f"unknown {collective} algorithm {algorithm!r} "
                     f"(known: {', '.join(registry)})")
    if not (type(segment_bytes) is int or _is_int(segment_bytes)) or segment_bytes < 1:
        raise reject(InputValueError, "bad segment size",
                     f"segment_bytes must be an integer >= 1, got {segment_bytes!r}")
    if not (type(root) is int or _is_int(root)):
        raise reject(InputTypeError, "root not an integer",
                     f"root must be an integer rank, got {root!r} ({type(root).__name__})")
    if not 0 <= root < size:
        raise reject(InputValueError, "root out of range",
                     f"root {root} is out of range for {size} ranks")
    return reduce_op


def _call_detail(algorithm, count, dtype: str) -> str:
    """"ring, 1024 float32": what a stall warning or timeout says of the call."""
    return f"{algorithm if isinstance(algorithm, str) else '?'}, {count} {dtype}"


def _run(collective: str, buf, *, op, algorithm: str, comm, root: int, check, segment_bytes,
         posted: bool = False):
    """posted: the board already numbered this call and exchanged its check row."""
    comm = communicator(comm)
    registry = COLLECTIVES[collective]
    default_check, default_segment_bytes = _defaults()
    check = default_check if check is None else bool(check)
    segment_bytes = default_segment_bytes if segment_bytes is None else segment_bytes
    buffer = reduce_op = error = None
    try:
        buffer = arrays.as_buffer(buf)
        reduce_op = _checked_arguments(collective, registry, buffer, op, algorithm, root,
                                       segment_bytes, comm.size)
    except InputError as exc:
        error = exc
    transport = comm.transport
    # formatted only if a message needs it; holds no reference to the caller's array
    count, dtype = (len(buffer.array), buffer.dtype.name) if buffer else ("?", "elements")
    detail = lambda: _call_detail(algorithm, count, dtype)   # noqa: E731
    if not posted:
        transport.begin(collective, detail)
    if not check and not posted and _board_peers_may_wait(transport, collective, algorithm):
        check = True            # a rank on the board posts its row: this rank must post one
    if check and not posted:
        agree(transport, collective=collective,
              length=len(buffer.array) if buffer else -1,
              dtype=(buffer.dtype.name + ("@cuda" if buffer.device else "")) if buffer else "?",
              op=reduce_op.name if reduce_op else (NOT_APPLICABLE if op is None else "?"),
              algorithm=algorithm if isinstance(algorithm, str) else "?",
              root=root if _is_int(root) else -1,
              segment_bytes=segment_bytes if _is_int(segment_bytes) else -1, error=error)
    elif error is not None:
        raise error
    function = registry.function(algorithm)
    args = (root,) if collective in ("broadcast", "reduce") else ()
    if buffer.device:
        from . import streams
        comm.device_transport().begin(collective, detail)
        ctx = Context(comm.device_transport(), comm.rank, comm.size, buffer.dtype, reduce_op,
                      segment_bytes, comm, device=True, rings=getattr(comm, "rings", None))
        with streams.dedicated(buffer):
            function(buffer.array, ctx, *args)
    else:
        ctx = Context(comm.transport, comm.rank, comm.size, buffer.dtype, reduce_op,
                      segment_bytes, comm, rings=getattr(comm, "rings", None))
        function(buffer.array, ctx, *args)
    return buffer


def allreduce(buf, op="sum", algorithm="ring", comm=None, *, check=None, segment_bytes=None,
              compression=None, key=None):
    """Reduce `buf` across all ranks of `comm`, in place; returns `buf`.

    algorithm: a name in collectives.ALGORITHMS (root, host, blocked, ring, ...).
    check: exchange metadata first so mismatched calls fail on every rank (default on; a
    oneshot or auto call on a communicator with a board always checks: it costs nothing
    there, and a rank on the board needs every rank's row).
    compression: a codec ("fp16", "int8", "topk:0.01+ef", ...: collectives/compression.py)
    for op sum or avg on a float buffer; `key` names the tensor whose `+ef` residual this
    is (default: the buffer's address and length); None or "none": no compression."""
    if compression is None and segment_bytes is None and type(buf) is np.ndarray and \
            _on_board(buf, op, algorithm, comm):
        return buf
    if compression is not None and compression != "none":
        from . import compressed
        return compressed.run(buf, op=op, algorithm=algorithm, comm=comm or default_comm(),
                              check=_defaults()[0] if check is None else check,
                              compression=compression, key=key)
    return _run("allreduce", buf, op=op, algorithm=algorithm, comm=comm, root=0, check=check,
                segment_bytes=segment_bytes).original


_plans: dict = {}       # (algorithm, op, dtype) -> (row, kind, op code), or None: not for the board


def _board_peers_may_wait(transport, collective: str, algorithm) -> bool:
    """Whether another rank may have taken this call to the board (an allreduce by oneshot or
    auto, where a board exists), so this rank, off it, must post its check row there even
    with the check off: the board then sends every rank down the Python path (NO_DATA)
    instead of leaving the board's ranks waiting for a row that never comes."""
    return collective == "allreduce" and algorithm in ("oneshot", "auto") and \
        getattr(transport, "board", None) is not None


def _plan(algorithm, op, dtype: np.dtype):
    """How a call with these arguments goes through the board, if it can: the metadata row
    it would check (length filled in by C), the C dtype and op codes."""
    if dtype not in board.KINDS or op not in board.OPS or \
            (op == "avg" and dtype.kind not in "f") or algorithm not in COLLECTIVES["allreduce"]:
        return None
    fields = check_row(collective="allreduce", length=0, dtype=dtype.name, op=op,
                       algorithm=algorithm, root=0, segment_bytes=_defaults()[1], error=None)
    return np.asarray(fields, dtype=np.int64).tobytes(), board.KINDS[dtype], board.OPS[op]


def _on_board(x: np.ndarray, op, algorithm, comm) -> bool:
    """A small `oneshot` allreduce (or an `auto` one whose pick is oneshot) on a communicator
    whose ranks all share this node: done in one C call (transport/board.py), the metadata
    check riding on it. False: take the general path (nothing was posted)."""
    if (algorithm != "oneshot" and algorithm != "auto") or type(op) is not str:
        return False
    comm = communicator(comm)
    transport = comm.transport
    chip = getattr(transport, "board", None)
    if chip is None:
        return False
    key = (algorithm, op, x.dtype, CHANGES[0])
    plan = _plans.get(key, False)
    if plan is False:
        plan = _plans[key] = _plan(algorithm, op, x.dtype)
    if plan is None:
        return False
    if algorithm == "auto" and _auto_pick(transport, comm, x) != "oneshot":
        return False
    if transport.broken or transport.inner.broken:
        transport._usable()
        transport.inner._usable()
    # board.first_wait(transport), written out: this is the hot path
    verdict = chip.allreduce(x, *plan, min(transport.timeout * 0.5, transport.board_chunk))
    if verdict == board.NOT_ELIGIBLE:   # strided, read-only or over CAPACITY: nothing was
        return False                    # posted; the general path takes it or says why not
    transport.begin("allreduce", lambda: _call_detail(algorithm, x.size, x.dtype.name))
    if verdict.__class__ is tuple:                # ranks still missing after the first wait
        verdict = board.finish(transport, verdict, x, *plan)
    if verdict == board.ROWS_DIFFER:
        explain(board.table(transport, len(plan[0]) // 8), "allreduce", comm.rank)
    if verdict == board.NO_DATA:       # another rank took the Python path: so does this one
        _run("allreduce", x, op=op, algorithm=algorithm, comm=comm, root=0, check=False,
             segment_bytes=None, posted=True)
    return True


def _auto_pick(transport, comm, x) -> str | None:
    global _auto
    if _auto is None:
        from topology import auto as _auto
    return _auto.agreed_pick(transport, comm.size, comm.rank, x.nbytes, x.itemsize)


_auto = None


def reduce_scatter(buf, op="sum", algorithm="ring", comm=None, *, check=None,
                   segment_bytes=None):
    """Reduce `buf` so that this rank's chunk (partition.chunk_bounds) holds the reduced values;
    returns a view of that chunk. The rest of `buf` is scratch afterwards.
    algorithm: "ring" or "direct"."""
    buffer = _run("reduce_scatter", buf, op=op, algorithm=algorithm, comm=comm, root=0,
                  check=check, segment_bytes=segment_bytes)
    return _flat(buffer.original)[slice(*chunk(len(buffer.array), comm=comm))]


def allgather(buf, algorithm="ring", comm=None, *, check=None, segment_bytes=None):
    """`buf` holds this rank's part in its chunk (see `chunk`); on return it holds every
    rank's part. algorithm: "ring" or "direct"."""
    return _run("allgather", buf, op=None, algorithm=algorithm, comm=comm, root=0, check=check,
                segment_bytes=segment_bytes).original


def broadcast(buf, root=0, algorithm="ring", comm=None, *, check=None, segment_bytes=None):
    """Copy root's `buf` into every rank's `buf`. algorithm: "ring" (pipelined chain) or "direct"."""
    return _run("broadcast", buf, op=None, algorithm=algorithm, comm=comm, root=root,
                check=check, segment_bytes=segment_bytes).original


def reduce(buf, op="sum", root=0, algorithm="ring", comm=None, *, check=None, segment_bytes=None):
    """Reduce every rank's `buf` into root's `buf`; other ranks' buffers are left as they were.
    algorithm: "ring" (pipelined chain) or "direct"."""
    return _run("reduce", buf, op=op, algorithm=algorithm, comm=comm, root=root, check=check,
                segment_bytes=segment_bytes).original


def empty(shape, dtype="float32", comm=None):
    """An uninitialised array that lives in this rank's shared memory, so that collectives
    on `comm` send it with no copy: node peers read it in place (the shared-memory
    transport's REF descriptors). A numpy array (bfloat16: a CPU torch tensor). On a
    communicator without shared memory (RINGPS_TRANSPORT=mpi, one rank per node) it is an
    ordinary array. Local: each rank calls it for itself, as often as it likes; the memory
    is freed when the last view of it is."""
    comm = comm or default_comm()
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"ringps: rank {comm.rank}: negative dimension in shape {shape}")
    kind = dtypes.lookup(_dtype_name(dtype))
    count = int(np.prod(shape, dtype=np.int64))
    allocate = getattr(comm.transport, "buffer", None)
    array = allocate(count * kind.itemsize).view(kind.storage) if allocate \
        else np.empty(count, kind.storage)
    array = array.reshape(shape)
    if kind.name == "bfloat16":
        import torch
        return torch.from_numpy(array).view(torch.bfloat16)
    return array


def _dtype_name(dtype) -> str:
    """'float32' for 'float32', np.float32, np.dtype('float32') or torch.float32."""
    if isinstance(dtype, str) or str(dtype).startswith("torch."):
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name


def zeros(shape, dtype="float32", comm=None):
    """`empty`, filled with zeros."""
    array = empty(shape, dtype, comm)
    array.zero_() if hasattr(array, "zero_") else array.fill(0)
    return array


def chunk(count: int, rank: int | None = None, comm=None) -> tuple[int, int]:
    """(start, stop) of `rank`'s chunk of a `count`-element buffer (reduce_scatter, allgather)."""
    comm = comm or default_comm()
    return partition.chunk_bounds(count, comm.size)[comm.rank if rank is None else rank]


def _flat(obj):
    return obj.view(-1) if arrays._is_torch_tensor(obj) else obj.reshape(-1)
