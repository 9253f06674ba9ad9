"""A server shard: holds its blocks, applies pushes through the handler, answers pulls when
the consistency policy allows, and aggregates `ps` allreduce parts.

One loop per server rank: probe for the next request header from any worker, read its
payload, act, reply. A pull the policy cannot answer yet waits in its block's queue and is
retried after every push to that block. A bad request gets an error reply to its worker
only; everything else carries on. That includes a header the wire cannot decode
(wire.BadHeader): its payloads are drained and its worker answered if the header still
names them and its request id, and otherwise the server says on stderr what it dropped.
The loop ends when every worker has said goodbye.

Never hang (the server's side of collectives/watchdog.py): while idle the loop watches what
it holds back, a pull the policy defers, an allreduce part still missing contributors, or
(every other worker gone) a worker that never says goodbye:

    waited           what happens
    timeout / 2      a stall warning naming the workers not heard from since the wait began
    0.9 x timeout    those waits are answered with an error naming them (a little before
                     the workers' own deadline, so that they learn why), then PSTimeout:
                     the server says so in one line and ends the job
"""
from __future__ import annotations

import sys
import time
import traceback

import numpy as np

from collectives import compression, dtypes, ops, watchdog

from . import checkpoint, consistency, optim, protocol
from .protocol import error
from .wire import BadHeader, Wire

GIVE_UP = 0.9           # x timeout: a held-back wait is answered with an error naming who
                        # is missing, just before the workers' own deadline


class BlockEntry:
    """One block of one key: its value, handler state, version and clocks."""

    def __init__(self, meta: dict, workers: int):
        self.meta = meta
        self.dtype = dtypes.lookup(meta["dtype"])
        self.handler = optim.build(*meta["handler"])
        policy = meta["policy"]
        self.policy = consistency.make_policy(policy["consistency"], workers,
                                              policy["staleness"], policy["quorum"])
        self.value = np.zeros((meta["rows"], meta["width"]), dtype=self.dtype.storage)
        self.state = self.handler.init_state(self.compute(self.value))
        self.version = 0
        self.clocks = np.zeros(workers, dtype=np.int64)
        self.rounds: dict[int, consistency.Round] = {}
        self.waiting: list[tuple] = []

    def compute(self, stored: np.ndarray) -> np.ndarray:
        return np.asarray(self.dtype.to_compute(stored))

    def nbytes(self, rows: int | None = None) -> int:
        rows = self.meta["rows"] if rows is None else rows
        return rows * self.meta["width"] * self.dtype.itemsize

    def push(self, worker: int, rows, grad: np.ndarray) -> None:
        if self.policy.immediate:
            self.clocks[worker] += 1
            self.apply(rows, grad)
            return
        target = self.policy.round_of(self.clocks, self.version, worker)
        self.clocks[worker] += 1
        self.rounds.setdefault(target, consistency.Round()).add(worker, rows, grad)
        while self.version in self.rounds and self.policy.complete(self.rounds[self.version]):
            rows_, summed = self.rounds.pop(self.version).gradient(self.meta["rows"])
            self.apply(rows_, summed, count=False)
            self.version += 1

    def apply(self, rows, grad: np.ndarray, count: bool = True) -> None:
        if rows is None:
            value = self.compute(self.value)
            self.handler.apply(value, grad, self.state)
            if value is not self.value:
                self.dtype.from_compute(value, self.value)
        else:
            value = self.compute(self.value[rows])
            state = {name: array[rows] for name, array in self.state.items()}
            self.handler.apply(value, grad, state)
            stored = np.empty((len(rows), self.meta["width"]), dtype=self.dtype.storage)
            self.dtype.from_compute(value, stored)
            self.value[rows] = stored
            for name, array in state.items():
                self.state[name][rows] = array
        if count:
            self.version += 1

    def can_answer(self, worker: int) -> bool:
        return self.policy.can_answer(self.clocks, self.version, worker)


class Server:
    def __init__(self, wire: Wire, worker_ranks: list[int], index: int,
                 restored: dict | None = None, timeout: float = 300.0):
        self.wire = wire
        self.index = index
        self.rank = wire.rank
        self.worker_of = {r: i for i, r in enumerate(worker_ranks)}
        self.workers = len(worker_ranks)
        self.timeout = timeout
        self.blocks: dict[tuple[str, int], BlockEntry] = {}
        self.restored = restored or {}
        self.partial: dict[tuple, dict] = {}       # allreduce parts being summed
        self.gone: set[int] = set()
        self.sends: list = []
        self.served = 0
        self.heard: dict[int, float] = {r: time.monotonic() for r in worker_ranks}
        self.first_bye: float | None = None
        self.warned_for: float | None = None      # the wait a stall warning was given for
        self.watched = 0.0

    # -- the loop ---------------------------------------------------------------------------
    def serve(self) -> None:
        idler = protocol.Idler()
        while len(self.gone) < self.workers:
            try:
                arrived = self.wire.next_request()
            except BadHeader as bad:
                try:
                    self.refuse(bad)
                except Exception:          # e.g. its payloads never came: keep serving
                    traceback.print_exc()
                continue
            if arrived is None:
                self._reap()
                self._watch()
                idler.idle()
                continue
            idler.reset()
            header, source = arrived
            try:
                self.handle(header, source)
            except Exception as exc:       # a bug here must not silently drop a worker's reply
                traceback.print_exc()
                self.reply(source, header, error(f"server {self.index} failed: {exc!r}"))
            self.served += 1
        while self.sends:
            self._reap()
            time.sleep(50e-6)

    def refuse(self, bad: BadHeader) -> None:
        """Answer a request whose header could not be decoded, as far as it can be."""
        if bad.payload is not None:
            for nbytes in bad.payload:
                self.receive(bad.source, nbytes)
        if bad.rid is None:
            sys.stderr.write(f"ringps: server {self.index} (rank {self.rank}) dropped a request "
                             f"it cannot answer (no request id): {bad}\n")
            sys.stderr.flush()
            return
        self.reply(bad.source, {"rid": bad.rid, "expects_payload": bad.expects_payload},
                   error(f"server {self.index} refused the request: "
                         f"{str(bad).removeprefix('ringps: ')}"))

    def handle(self, header: dict, source: int) -> None:
        kind = header["op"]
        self.heard[source] = time.monotonic()
        payloads = [self.receive(source, n) for n in header.get("payload", ())]
        if kind == "bye":
            self.gone.add(source)
            self.first_bye = self.first_bye or time.monotonic()
            return
        if source in self.gone:
            self.reply(source, header, error(f"worker (rank {source}) sent {kind} after "
                                             f"shutting down"))
            return
        getattr(self, f"on_{kind}")(header, source, *payloads)

    def receive(self, source: int, nbytes: int) -> np.ndarray:
        return self.wire.payload(source, nbytes, self.timeout,
                                 f"server {self.index} (rank {self.rank})")

    def reply(self, dest: int, header: dict, answer: dict, payload: np.ndarray | None = None):
        if header.get("expects_payload") and payload is None:
            payload = np.empty(0, np.uint8)        # an error: the payload is empty
        self.sends += self.wire.reply(dest, header["rid"], answer,
                                      payload if header.get("expects_payload") else None)

    def _reap(self) -> None:
        if self.sends:
            self.sends = [(r, b) for r, b in self.sends if not self.wire.done([r])]

    # -- key-value requests -----------------------------------------------------------------
    def entry(self, header: dict, source: int) -> BlockEntry | None:
        entry = self.blocks.get((header["key"], header["block"]))
        if entry is None:
            self.reply(source, header, error(f"unknown key {header['key_shown']} (block "
                                             f"{header['block']}): init it first"))
        return entry

    def on_init(self, header, source, *payload):
        meta = header["meta"]
        place = (header["key"], header["block"])
        entry = self.blocks.get(place)
        if entry is None:
            try:
                entry = BlockEntry(meta, self.workers)
            except ValueError as exc:
                self.reply(source, header, error(str(exc)))
                return
            saved = self.restored.pop(place, None)
            if saved is not None:
                problem = checkpoint.restore_into(entry, saved)
                if problem:
                    self.reply(source, header, error(f"key {header['key_shown']}: {problem}"))
                    return
            elif payload:
                entry.value.reshape(-1).view(np.uint8)[:] = payload[0]
            self.blocks[place] = entry
        else:
            same = all(entry.meta[f] == meta[f] for f in ("rows", "width", "dtype"))
            if not same:
                self.reply(source, header, error(
                    f"key {header['key_shown']} is already {self._shape(entry.meta)}, "
                    f"cannot init it as {self._shape(meta)}"))
                return
        self.reply(source, header, {"ok": True, "version": entry.version})

    @staticmethod
    def _shape(meta: dict) -> str:
        return f"{meta['dtype']} with {meta['rows']} x {meta['width']} elements"

    def _check_grad(self, entry, header, source, nbytes_expected, what) -> bool:
        if header["dtype"] != entry.meta["dtype"]:
            self.reply(source, header, error(
                f"{what} of key {header['key_shown']} has dtype {header['dtype']}, but the "
                f"key holds {entry.meta['dtype']}"))
            return False
        if header["payload"][-1] != nbytes_expected:
            self.reply(source, header, error(
                f"{what} of key {header['key_shown']} block {header['block']} has "
                f"{header['payload'][-1] // entry.dtype.itemsize} elements, expected "
                f"{nbytes_expected // entry.dtype.itemsize} (shape mismatch)"))
            return False
        return True

    def on_push(self, header, source, data):
        entry = self.entry(header, source)
        if entry is not None and header.get("codec"):      # BytePS: decode before the optimizer
            values = compression.parse(header["codec"]).codec.decode(data, header["count"])
            data = np.empty(header["count"], entry.dtype.storage)
            entry.dtype.from_compute(values, data)
            data = data.view(np.uint8)
            header = {**header, "payload": [data.nbytes]}
        if entry is None or not self._check_grad(entry, header, source, entry.nbytes(), "push"):
            return
        grad = entry.compute(data.view(entry.dtype.storage).reshape(entry.value.shape))
        entry.push(self.worker_of[source], None, grad)   # no copy: `data` is its own buffer
        self.reply(source, header, {"ok": True})      # received; applied or queued
        self._retry(entry)

    def on_push_rows(self, header, source, ids, data):
        entry = self.entry(header, source)
        if entry is None:
            return
        rows = self._rows(entry, header, source, ids)
        if rows is None or not self._check_grad(entry, header, source, entry.nbytes(len(rows)),
                                                "push_rows"):
            return
        grad = entry.compute(data.view(entry.dtype.storage).reshape(len(rows), entry.meta["width"]))
        entry.push(self.worker_of[source], rows, grad)   # no copy: `data` is its own buffer
        self.reply(source, header, {"ok": True})      # received; applied or queued
        self._retry(entry)

    def _rows(self, entry, header, source, ids):
        rows = ids.view(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= entry.meta["rows"]):
            self.reply(source, header, error(
                f"row ids of key {header['key_shown']} out of range for its block of "
                f"{entry.meta['rows']} rows"))
            return None
        return rows

    def on_pull(self, header, source):
        entry = self.entry(header, source)
        if entry is not None:
            self._answer_or_wait(entry, header, source, None)

    def on_pull_rows(self, header, source, ids):
        entry = self.entry(header, source)
        if entry is None:
            return
        rows = self._rows(entry, header, source, ids)
        if rows is not None:
            self._answer_or_wait(entry, header, source, rows)

    def _answer_or_wait(self, entry, header, source, rows, since=None) -> None:
        if entry.can_answer(self.worker_of[source]):
            value = entry.value if rows is None else entry.value[rows]
            self.reply(source, header, {"ok": True, "version": entry.version}, value.copy())
        else:
            entry.waiting.append((header, source, rows, since or time.monotonic()))

    def _retry(self, entry: BlockEntry) -> None:
        waiting, entry.waiting = entry.waiting, []
        for header, source, rows, since in waiting:
            self._answer_or_wait(entry, header, source, rows, since)

    # -- never hang ---------------------------------------------------------------------------
    def _waits(self):
        """(since, what, [(dest, header)] to answer) of everything held back."""
        for (key, block), entry in self.blocks.items():
            for header, source, rows, since in entry.waiting:
                yield (since, f"a {entry.policy.describe()} pull of key "
                              f"{header.get('key_shown', key)} (block {block}) at version "
                              f"{entry.version}", [(source, header)])
        for part in self.partial.values():
            yield (part["since"], f"an allreduce part ({len(part['from'])} of "
                                  f"{part['header']['expected']} contributions)", part["from"])
        if self.first_bye is not None:
            yield (self.first_bye, f"the goodbyes of the last {self.workers - len(self.gone)} "
                                   f"worker(s)", [])

    def _silent(self, since: float) -> str:
        ranks = sorted(r for r, t in self.heard.items() if t < since and r not in self.gone)
        if not ranks:
            return "no worker in particular"
        return ", ".join(f"worker {self.worker_of[r]} (rank {r})" for r in ranks)

    def _watch(self) -> None:
        now = time.monotonic()
        if now - self.watched < 0.25:
            return
        self.watched = now
        oldest = min(self._waits(), key=lambda w: w[0], default=None)
        if oldest is None:
            return
        since, what, holders = oldest
        waited = now - since
        who = f"server {self.index} (rank {self.rank})"
        if waited > GIVE_UP * self.timeout:
            reason = (f"{who}: {what} waited {waited:.1f} s; not heard from since: "
                      f"{self._silent(since)} (dead, hung, or stopped calling the PS)")
            for _, what_, holders_ in self._waits():
                for dest, header in holders_:
                    self.reply(dest, header, error(reason))
            deadline = time.monotonic() + 1.0
            while self.sends and time.monotonic() < deadline:
                self._reap()
            raise protocol.PSTimeout(f"ringps: {reason}")
        if waited > self.timeout / 2 and self.warned_for != since:
            self.warned_for = since
            sys.stderr.write(f"ringps: {who}: {what} has waited {waited:.1f} s; not heard "
                             f"from since: {self._silent(since)} (giving up in "
                             f"{GIVE_UP * self.timeout - waited:.1f} s)\n")
            sys.stderr.flush()

    # -- allreduce over the PS (ps/allreduce.py) --------------------------------------------
    def on_allreduce(self, header, source, data):
        key = (header["group"], header["seq"], header["part"])
        part = self.partial.get(key)
        codec = compression.parse(header["codec"]).codec if header.get("codec") else None
        if part is None:
            if codec is not None:            # BytePS: decompress before summing
                data = codec.decode(data, header["count"]).view(np.uint8)
            part = self.partial[key] = {"header": header, "sum": data, "from": [],
                                        "since": time.monotonic()}
        else:
            first = part["header"]
            if any(first.get(f) != header.get(f)
                   for f in ("dtype", "reduce", "expected", "payload", "codec")):
                part["error"] = (f"ranks disagree on an allreduce through the PS: "
                                 f"{self._describe(first)} vs {self._describe(header)}")
            elif codec is not None:
                codec.decode_add(data, part["sum"].view(np.float32))
            else:
                dtype = dtypes.lookup(header["dtype"])
                ops.combine(ops.lookup(header["reduce"]), dtype, part["sum"].view(dtype.storage),
                            data.view(dtype.storage))
        part["from"].append((source, header))
        if len(part["from"]) == header["expected"]:
            del self.partial[key]
            for dest, h in part["from"]:
                if "error" in part:
                    self.reply(dest, h, error(part["error"]))
                else:
                    self.reply(dest, h, {"ok": True}, part["sum"])

    @staticmethod
    def _describe(header: dict) -> str:
        return (f"{header['payload'][0]} bytes of {header['dtype']}, op {header['reduce']}, "
                f"{header['expected']} contributors")

    # -- checkpoints --------------------------------------------------------------------------
    def on_checkpoint(self, header, source):
        try:
            written = checkpoint.write_shard(header["path"], self.index, self.blocks,
                                             header["id"])
        except (OSError, checkpoint.CheckpointError) as exc:
            self.reply(source, header, error(f"server {self.index} could not write its "
                                             f"checkpoint shard: {exc}"))
            return
        self.reply(source, header, {"ok": True, **written})


def run(wire: Wire, worker_ranks: list[int], index: int, restored=None,
        timeout: float = 300.0) -> Server:
    server = Server(wire, worker_ranks, index, restored, timeout)
    try:
        server.serve()
    except protocol.PSTimeout as exc:
        sys.stderr.write(f"{exc}; ending the job\n")
        sys.stderr.flush()
        time.sleep(watchdog.GRACE_SECONDS)     # the workers print why, then the job ends
        watchdog.end_now(str(exc))
    except Exception as exc:
        traceback.print_exc()
        sys.stderr.write(f"ringps: server {index} (rank {server.rank}) failed; ending the job\n")
        sys.stderr.flush()
        watchdog.end_now(f"server {index} failed: {exc!r}")
    return server
