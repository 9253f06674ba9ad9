"""The worker's side of the parameter server: the ps-lite-shaped KV store.

    kv.init("w", w)                      every worker, same order; worker 0's value is stored
    h = kv.push("w", grad)               returns at once; the server sums or applies it
    h = kv.pull("w", out=w)              out is filled when the policy allows (BSP: after the
    kv.wait(h)                           round of this worker's last push has been applied)
    kv.push_pull("w", grad, out=w)       both, in order
    kv.push_rows("emb", ids, grads)      sparse rows of a 2-D key (embedding tables)
    rows = kv.wait(kv.pull_rows("emb", ids))

Keys are names or ints; values numpy arrays or CPU torch tensors (viewed, never copied: a
pushed gradient must stay unchanged until its handle is waited), or device arrays (CuPy,
CUDA torch tensors), which go through host memory (not yet run on a GPU). Each key is cut into
blocks that a slicer places on the server shards (sharding.py); a push or pull is one
message per block, all in flight at once. Errors a server reports (a gradient of the
wrong shape or dtype, an unknown key) are raised by `wait`, naming the worker, the server
and the key; what can be checked here is checked before anything is sent.
"""
from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np

from collectives import arrays, watchdog
from collectives.dtypes import DType

from . import checkpoint, consistency, optim, protocol, sharding
from .protocol import PSError
from .wire import Wire


class UnknownKey(PSError, KeyError):
    def __str__(self):
        return self.args[0]


@dataclass
class KeyInfo:
    name: str
    shown: str
    shape: tuple
    dtype: DType
    rows: int
    width: int
    blocks: list
    servers: list            # server index of each block
    meta: dict               # what the servers are told (handler, policy, rows, ...)
    torch: bool

    @property
    def starts(self) -> np.ndarray:
        return np.array([b.start for b in self.blocks])


def key_name(key) -> tuple[str, str]:
    """(internal name, how to show it). Ints and strings never collide."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
        raise TypeError(f"ringps: a key is a str or an int, not {type(key).__name__}")
    return (key, repr(key)) if isinstance(key, str) else (f"#{int(key)}", repr(int(key)))


class Handle:
    """Pending requests of one push/pull; `KVStore.wait` completes it."""

    def __init__(self, what: str):
        self.what = what
        self.requests: list = []          # MPI requests: sends, reply headers, payloads
        self.replies: list[tuple] = []    # (index in requests, server, block, key name)
        self.keep: list = []              # payloads that must live until the sends complete
        self.after: list = []             # run on success, in order
        self.result = None
        self.done = False
        self.versions: dict[str, int] = {}    # key name -> lowest version among its blocks
        self.first_rid = 0                    # the id of its first request


class KVStore:
    def __init__(self, wire: Wire, server_ranks: list[int], workers, *,
                 consistency_name: str = "bsp", staleness: int = 0,
                 quorum: float | None = None, optimizer="sum",
                 block_bytes: int = sharding.DEFAULT_BLOCK_BYTES, slicer="hash",
                 timeout: float = 300.0):
        self.wire = wire
        self.server_ranks = list(server_ranks)
        self.comm = workers                       # the workers' Communicator
        self.rank, self.size = workers.rank, workers.size
        self.timeout = timeout
        self.block_bytes = block_bytes
        self.slicer = sharding.make_slicer(slicer, len(server_ranks))
        self.defaults = {"optimizer": optim.as_spec(optimizer),
                         "policy": consistency.spec(consistency_name, staleness, quorum)}
        self.keys: dict[str, KeyInfo] = {}
        self.versions: dict[str, int] = {}
        self.closed = False
        self._rid = 0
        self._pending: dict[Handle, None] = {}    # in issue order: the oldest is first
        n = len(server_ranks)
        self._stats = {"requests": [0] * n, "bytes_sent": [0] * n, "bytes_received": [0] * n}

    @property
    def servers(self) -> int:
        return len(self.server_ranks)

    # -- setting keys up --------------------------------------------------------------------
    def init(self, key, value=None, *, optimizer=None, consistency_name=None, staleness=None,
             quorum=None) -> None:
        """Declare `key` (or a dict of keys) on every worker, in the same order; worker 0's
        value becomes the stored value (after a restore, the checkpoint's value wins: pull it).
        optimizer / consistency_name / staleness / quorum override the store's defaults for
        these keys (e.g. embeddings "asp", dense layers "bsp")."""
        self._open()
        items = key.items() if isinstance(key, dict) else [(key, value)]
        policy = dict(self.defaults["policy"])
        if consistency_name is not None or staleness is not None or quorum is not None:
            policy = consistency.spec(consistency_name or policy["consistency"],
                                      policy["staleness"] if staleness is None else staleness,
                                      quorum)
        handler = self.defaults["optimizer"] if optimizer is None else optim.as_spec(optimizer)
        infos = [self._describe(k, v, handler, policy) for k, v in items]
        for info in infos:
            known = self.keys.get(info.name)
            if known is not None and (known.shape, known.dtype.name) != (info.shape,
                                                                         info.dtype.name):
                raise PSError(f"ringps: worker {self.rank}: key {info.shown} is already "
                              f"{known.dtype.name} with shape {known.shape}, cannot init it "
                              f"as {info.dtype.name} with shape {info.shape}")
        new = [info for info in infos if info.name not in self.keys]
        placed = self.slicer.place([b for info in new for b in info.blocks])
        for info in infos:       # a key seen before keeps its place (its blocks live there)
            known = self.keys.get(info.name)
            info.servers = known.servers if known else [placed[b.name] for b in info.blocks]
            self.keys[info.name] = info
        # Worker 0 stores the values; then every other worker checks its own view of each key
        # against what the servers hold, so a worker with a different shape fails here.
        self._on_worker_zero(lambda: self.wait(self._init_requests(infos, items,
                                                                   send_values=True)))
        if self.rank != 0:
            self.wait(self._init_requests(infos, items, send_values=False))

    def _describe(self, key, value, handler, policy) -> KeyInfo:
        name, shown = key_name(key)
        if value is None:
            raise ValueError(f"ringps: init of key {shown} needs a value (its shape and dtype)")
        buffer = arrays.as_buffer(value, writable=False)
        shape = tuple(value.shape)
        rows = shape[0] if len(shape) >= 1 else 1
        width = int(np.prod(shape[1:])) if len(shape) >= 2 else 1
        name_h, params = handler
        if optim.HANDLERS[name_h].floats_only and not buffer.dtype.is_float:
            raise ValueError(f"ringps: key {shown} is {buffer.dtype.name}; handler "
                             f"{name_h!r} needs a floating-point value (sum and accumulate "
                             f"work on integers)")
        blocks = sharding.split(name, rows, width * buffer.dtype.itemsize, self.block_bytes)
        meta = {"dtype": buffer.dtype.name, "width": width, "handler": [name_h, params],
                "policy": policy}
        return KeyInfo(name, shown, shape, buffer.dtype, rows, width, blocks, [], meta,
                       arrays._is_torch_tensor(value))

    def _init_requests(self, infos, items, send_values: bool) -> Handle:
        handle = Handle("init")
        for info, (_, value) in zip(infos, items):
            flat = arrays.as_buffer(value, writable=False).array
            if send_values and arrays.is_device(flat):
                flat = flat.get()                       # the servers take host bytes
            for block, server in zip(info.blocks, info.servers):
                meta = {**info.meta, "rows": block.stop - block.start}
                payloads = [flat[block.start * info.width:block.stop * info.width]] \
                    if send_values else []
                self._send(handle, server, {"op": "init", "key": info.name, "block": block.index,
                                            "key_shown": info.shown, "meta": meta}, payloads)
        handle.after.append(lambda: self._record(handle))
        return handle

    # -- dense push and pull ----------------------------------------------------------------
    def push(self, key, grad, compression=None) -> Handle:
        """compression: a codec ("int8", "topk:0.01+ef": collectives/compression.py) for a
        float key; each block travels encoded and its server decodes it before the
        optimizer (BytePS), with the `+ef` residual kept per (key, block) on this worker."""
        info = self._info(key)
        flat = self._check(info, grad, "push", writable=False)
        codec = self._codec(info, compression)
        handle = Handle(f"push of key {info.shown}")
        self._push_blocks(handle, info, flat, codec)
        return self._track(handle)

    def pull(self, key, out) -> Handle:
        info = self._info(key)
        flat = self._check(info, out, "pull into", writable=True)
        handle = Handle(f"pull of key {info.shown}")
        self._pull_blocks(handle, info, self._landing(handle, flat))
        handle.result = out
        return self._track(handle)

    def push_pull(self, key, grad, out, compression=None) -> Handle:
        """Push `grad` (compressed as in push), then pull the updated value into `out`
        (which may be `grad`: the pull's bytes land only after the server has the push)."""
        info = self._info(key)
        flat_grad = self._check(info, grad, "push", writable=False)
        flat_out = self._check(info, out, "pull into", writable=True)
        codec = self._codec(info, compression)
        if not arrays.is_device(flat_out) and np.shares_memory(flat_grad, flat_out):
            flat_grad = flat_grad.copy()
        handle = Handle(f"push_pull of key {info.shown}")
        self._push_blocks(handle, info, flat_grad, codec)
        self._pull_blocks(handle, info, self._landing(handle, flat_out))
        handle.result = out
        return self._track(handle)

    @staticmethod
    def _landing(handle: Handle, flat):
        """Where a pull's bytes land: `flat` itself, or for device memory a host buffer
        copied up once the pull is complete (servers are host processes)."""
        if not arrays.is_device(flat):
            return flat
        host = np.empty(flat.shape, dtype=flat.dtype)
        handle.after.append(lambda: arrays.copy(flat, host))
        return host

    def _codec(self, info: KeyInfo, compression):
        if compression is None:
            return None
        from collectives.compression import check_dtype, compressor
        from collectives.errors import InputError
        try:
            check_dtype(info.dtype.name)
            return compressor(compression)
        except InputError as exc:
            raise PSError(f"ringps: worker {self.rank}: push of key {info.shown}: "
                          f"{str(exc).removeprefix('ringps: ')}") from None

    def _push_blocks(self, handle, info, flat, codec=None) -> None:
        for block, server in zip(info.blocks, info.servers):
            part = flat[block.start * info.width:block.stop * info.width]
            header = self._header("push", info, block)
            if codec is not None:
                if arrays.is_device(part):
                    part = part.get()
                values = np.asarray(info.dtype.to_compute(part), dtype=np.float32).copy()
                where = ("ps", info.name, block.index)
                encoding = codec.begin(values, where)
                part = encoding.encode(encoding.values)
                codec.end(encoding, where)
                header.update(codec=codec.codec.name, count=len(values))
            self._send(handle, server, header, [part])

    def _pull_blocks(self, handle, info, flat) -> None:
        for block, server in zip(info.blocks, info.servers):
            self._send(handle, server, self._header("pull", info, block), [],
                       out=flat[block.start * info.width:block.stop * info.width])
        handle.after.append(lambda: self._record(handle))

    # -- sparse rows ------------------------------------------------------------------------
    def push_rows(self, key, row_ids, grads) -> Handle:
        """Push gradients for some rows of a table; repeated ids are summed here first. Under
        BSP and SSP every block of the key gets a (possibly empty) push, so every worker's
        clock advances the same way whichever rows it touched."""
        info = self._info(key)
        ids = self._ids(info, row_ids)
        buffer = arrays.as_buffer(grads, writable=False)
        self._same_dtype(info, buffer.dtype, "push_rows")
        if buffer.array.size != len(ids) * info.width:
            raise PSError(f"ringps: worker {self.rank}: push_rows of key {info.shown}: "
                          f"{len(ids)} row ids but {buffer.array.size} gradient elements "
                          f"(expected {len(ids)} x {info.width})")
        grad_rows = buffer.array.reshape(len(ids), info.width)
        ids, where = np.unique(ids, return_inverse=True)     # sorted, repeats summed
        summed = np.zeros((len(ids), info.width), dtype=info.dtype.storage)
        if info.dtype.native:
            np.add.at(summed, where, grad_rows)
        else:
            compute = np.zeros((len(ids), info.width), dtype=np.float32)
            np.add.at(compute, where, info.dtype.to_compute(grad_rows))
            info.dtype.from_compute(compute, summed)
        grad_rows = summed
        every_block = info.meta["policy"]["consistency"] != "asp"
        handle = Handle(f"push_rows of key {info.shown}")
        for block, server, mask in self._by_block(info, ids):
            if not mask.any() and not every_block:
                continue
            local = ids[mask] - block.start
            self._send(handle, server, self._header("push_rows", info, block),
                       [local, np.ascontiguousarray(grad_rows[mask])])
        return self._track(handle)

    def pull_rows(self, key, row_ids) -> Handle:
        """Rows of a table; `wait` returns them as an array (len(ids), *shape[1:])."""
        info = self._info(key)
        ids = self._ids(info, row_ids)
        out = np.empty((len(ids), info.width), dtype=info.dtype.storage)
        handle = Handle(f"pull_rows of key {info.shown}")
        for block, server, mask in self._by_block(info, ids):
            if not mask.any():
                continue
            part = np.empty((int(mask.sum()), info.width), dtype=info.dtype.storage)
            self._send(handle, server, self._header("pull_rows", info, block),
                       [ids[mask] - block.start], out=part)
            handle.after.append(lambda m=mask, p=part: out.__setitem__(m, p))
        handle.after.append(lambda: self._record(handle))
        shape = (len(ids),) + info.shape[1:]
        handle.result = self._like(info, out.reshape(shape))
        return self._track(handle)

    def _ids(self, info, row_ids) -> np.ndarray:
        ids = np.asarray(row_ids.cpu() if hasattr(row_ids, "cpu") else row_ids).reshape(-1)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise PSError(f"ringps: worker {self.rank}: row ids of key {info.shown} must be "
                          f"integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= info.rows):
            bad = ids[(ids < 0) | (ids >= info.rows)][0]
            raise PSError(f"ringps: worker {self.rank}: row id {bad} is out of range for key "
                          f"{info.shown} with {info.rows} rows")
        return ids

    def _by_block(self, info, ids):
        which = np.searchsorted(info.starts, ids, side="right") - 1
        for i, (block, server) in enumerate(zip(info.blocks, info.servers)):
            yield block, server, which == i

    # -- waiting ------------------------------------------------------------------------------
    def wait(self, handle: Handle):
        """Block until every message of `handle` is done; raise what a server refused.
        Returns the handle's result (the `out` of a pull, the rows of pull_rows)."""
        if handle.done:
            return handle.result
        results = self._complete(handle)
        handle.done = True
        self._pending.pop(handle, None)
        problems: dict[tuple, list] = {}        # (server, error) -> blocks
        for index, server, block, name in handle.replies:
            answer = results[index]
            if not answer["ok"]:
                problems.setdefault((server, answer["error"]), []).append(str(block))
            elif "version" in answer and name is not None:
                handle.versions[name] = min(answer["version"],
                                            handle.versions.get(name, answer["version"]))
        if problems:
            raise PSError(f"ringps: worker {self.rank}: {handle.what} failed: " + "; ".join(
                f"server {server} (rank {self.server_ranks[server]}), "
                f"block{'s' * (len(blocks) > 1)} {', '.join(blocks)}: {text}"
                for (server, text), blocks in problems.items()))
        for step in handle.after:
            step()
        return handle.result

    def wait_all(self) -> None:
        for handle in list(self._pending):
            self.wait(handle)

    def _complete(self, handle: Handle) -> list:
        requests = handle.requests
        if not requests:
            return []
        idler = protocol.Idler()
        start = time.monotonic()
        warned = False
        while True:
            done, results = self.wire.results(requests)
            if done:
                return results
            waited = time.monotonic() - start
            if waited > self.timeout or (waited > self.timeout / 2 and not warned):
                silent = self._silent_servers(handle)
                if waited > self.timeout:
                    raise watchdog.failed(protocol.PSTimeout(
                        f"ringps: worker {self.rank} timed out after {self.timeout:g} s on "
                        f"{handle.what}; not heard from: {silent} (dead or hung; a server "
                        f"holding a BSP/SSP pull for a missing worker answers before this "
                        f"deadline, naming it)"))
                warned = True
                sys.stderr.write(f"ringps: worker {self.rank}: {handle.what} has waited "
                                 f"{waited:.1f} s; no reply yet from: {silent} (timeout in "
                                 f"{self.timeout - waited:.1f} s; a server holding the request "
                                 f"for other workers names them)\n")
                sys.stderr.flush()
            idler.idle()

    def _silent_servers(self, handle: Handle) -> str:
        """The servers whose replies to `handle` have not come (exactly those)."""
        requests = handle.requests
        silent = sorted({server for index, server, _, _ in handle.replies
                         if not self.wire.done([requests[index]])})
        return ", ".join(f"server {s} (rank {self.server_ranks[s]})" for s in silent) \
            or "no server in particular"

    # -- the wire -----------------------------------------------------------------------------
    def _header(self, op: str, info: KeyInfo, block) -> dict:
        return {"op": op, "key": info.name, "key_shown": info.shown, "block": block.index,
                "dtype": info.dtype.name}

    def _send(self, handle: Handle, server: int, header: dict, payloads, out=None) -> None:
        dest = self.server_ranks[server]
        rid = self.next_rid()
        handle.first_rid = handle.first_rid or rid
        header["rid"] = rid
        header["payload"] = [p.nbytes for p in payloads]
        header["expects_payload"] = out is not None
        requests = handle.requests
        requests += self.wire.request(dest, header, payloads)
        handle.keep.append(payloads)
        handle.replies.append((len(requests), server, header.get("block"), header.get("key")))
        requests.append(self.wire.reply_header(dest, rid))
        if out is not None:
            requests.append(self.wire.reply_payload(dest, rid, out))
        self.count(server, sum(p.nbytes for p in payloads), 0 if out is None else out.nbytes)

    def count(self, server: int, sent: int, received: int) -> None:
        """One request's traffic, for stats()."""
        self._stats["requests"][server] += 1
        self._stats["bytes_sent"][server] += sent
        self._stats["bytes_received"][server] += received

    def next_rid(self) -> int:
        """A fresh request id whose reply tags no waiting request still uses: ids wrap
        every SLOTS, so the oldest handles are waited for first when the ids come round."""
        while self._pending and \
                self._rid + 1 - next(iter(self._pending)).first_rid >= protocol.SLOTS:
            self.wait(next(iter(self._pending)))
        self._rid += 1
        return self._rid

    def _track(self, handle: Handle) -> Handle:
        self._pending[handle] = None
        return handle

    def _record(self, handle: Handle) -> None:
        self.versions.update(handle.versions)

    # -- checks -------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.closed:
            raise PSError(f"ringps: worker {self.rank}: the KV store was shut down; no more "
                          f"push or pull")

    def _info(self, key) -> KeyInfo:
        self._open()
        name, shown = key_name(key)
        info = self.keys.get(name)
        if info is None:
            raise UnknownKey(f"ringps: worker {self.rank}: unknown key {shown}: kv.init it "
                             f"first (known: {', '.join(i.shown for i in self.keys.values())})")
        return info

    def _same_dtype(self, info, dtype: DType, what: str) -> None:
        if dtype.name != info.dtype.name:
            raise PSError(f"ringps: worker {self.rank}: {what} of key {info.shown} with dtype "
                          f"{dtype.name}, but the key holds {info.dtype.name}")

    def _check(self, info: KeyInfo, obj, what: str, writable: bool) -> np.ndarray:
        buffer = arrays.as_buffer(obj, writable=writable)
        self._same_dtype(info, buffer.dtype, what)
        if buffer.array.size != info.rows * info.width:
            raise PSError(f"ringps: worker {self.rank}: {what} of key {info.shown} with shape "
                          f"{tuple(obj.shape)}, but the key has shape {info.shape}")
        if buffer.device and not writable:      # a pushed device array: its bytes, on the host
            return buffer.array.get()
        return buffer.array

    def _like(self, info: KeyInfo, array: np.ndarray):
        if not info.torch:
            return array.view(np.uint16) if info.dtype.name == "bfloat16" else array
        import torch
        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if info.dtype.name == "bfloat16" else tensor

    # -- versions, stats, checkpoints, shutdown ---------------------------------------------
    def version(self, key) -> int:
        """The key's version (updates applied) as of this worker's last pull or init."""
        return self.versions.get(self._info(key).name, 0)

    def stats(self, all_workers: bool = False) -> list[dict]:
        """Per server: requests and bytes this worker (or, with all_workers, every worker:
        collective) sent and received, and the blocks and bytes the slicer placed there."""
        counts = np.array([self._stats[k] for k in ("requests", "bytes_sent",
                                                    "bytes_received")], dtype=np.int64)
        if all_workers:
            import collectives
            collectives.allreduce(counts, comm=self.comm, algorithm="ring")
        blocks = [0] * self.servers
        for info in self.keys.values():
            for s in info.servers:
                blocks[s] += 1
        return [{"server": s, "rank": self.server_ranks[s], "requests": int(counts[0, s]),
                 "bytes_sent": int(counts[1, s]), "bytes_received": int(counts[2, s]),
                 "blocks": blocks[s], "placed_bytes": self.slicer.loads[s]}
                for s in range(self.servers)]

    def checkpoint(self, path: str) -> None:
        """Write every shard to `path` and commit them with a manifest (collective over the
        workers: each waits for its own pushes first, so the checkpoint holds all of them)."""
        self._open()
        self.wait_all()
        self.comm.barrier()
        self._on_worker_zero(lambda: self._write_checkpoint(str(path)))

    def _on_worker_zero(self, step) -> None:
        """Run `step` on worker 0 and tell every worker how it went (collective): all raise
        the same error, or none does, and nobody waits for a worker 0 that failed."""
        message = np.zeros(4096, dtype=np.uint8)
        if self.rank == 0:
            try:
                step()
            except (PSError, OSError) as exc:
                text = str(exc).encode()[:4095]
                message[:len(text)] = np.frombuffer(text, dtype=np.uint8)
                message[-1] = 1
        import collectives
        collectives.broadcast(message, root=0, comm=self.comm, algorithm="direct")
        if message[-1]:
            raise PSError(message[:-1].tobytes().rstrip(b"\0").decode(errors="replace"))

    def _write_checkpoint(self, path: str) -> None:
        checkpoint_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        handle = Handle(f"checkpoint to {path}")
        for server in range(self.servers):
            self._send(handle, server, {"op": "checkpoint", "path": path, "id": checkpoint_id},
                       [])
        results = self._complete(handle)
        answers = [results[i] for i, *_ in handle.replies]
        for (_, server, _, _), answer in zip(handle.replies, answers):
            if not answer["ok"]:
                raise PSError(f"ringps: checkpoint to {path} failed: {answer['error']}")
        shards = [{k: a[k] for k in ("file", "sha256", "blocks")} for a in answers]
        checkpoint.write_manifest(path, checkpoint_id, shards, self.size)

    def shutdown(self) -> None:
        """Wait for this worker's requests, then tell every server this worker is done; a
        server returns once every worker has. Idempotent."""
        if self.closed:
            return
        self.wait_all()
        self.closed = True
        self.wire.goodbye(self.server_ranks)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
