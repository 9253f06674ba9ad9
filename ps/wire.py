"""The PS's own MPI communicator: the one place in ps/ that calls mpi4py.

The collectives move chunks through the Transport seam (collectives/transport/), which is
peer to peer between ranks that all take part. The parameter server speaks a request/reply
protocol instead (protocol.py): a server takes the next request from any worker, replies
out of order, and defers answers. This class is that protocol's transport: headers, raw
payloads, reply tags from request ids, and polling tests, on a communicator of its own
(duplicated from the job's, so no other traffic can match).

Headers are never pickled: unpickling runs whatever code the bytes name, and a server reads
bytes from every worker. A header is a fixed binary prefix and a UTF-8 JSON object:

    field     type                           bytes    meaning
    magic     ASCII "RPSH"                   4        anything else is not a ringps header
    version   uint8                          1        HEADER_VERSION (1)
    kind      uint8                          1        0 a reply; 1..8 a request (KINDS)
    reserved  uint16, zero                   2
    length    uint32, little-endian          4        bytes of JSON after the prefix
    body      UTF-8 JSON object              length   the fields of protocol.FIELDS (the
                                                      kind is the prefix's, not a field)

A whole header is at most MAX_HEADER_BYTES (16 MiB). Decoding checks all of it (magic, version,
kind, length against the message size, JSON, each field's type) and raises BadHeader,
which names the sender and what is wrong and carries whatever could still be read (rid,
payload sizes), so a server answers a bad request with an error instead of crashing.
Headers are received by probing for the message and allocating its exact size, so a reply
header has no size limit but MAX_HEADER_BYTES (a checkpoint reply lists every block).
"""
from __future__ import annotations

import json
import struct
import time

import numpy as np
from mpi4py import MPI

from . import protocol
from .protocol import DATA, REQUEST, PSError, reply_tags

MAGIC = b"RPSH"
HEADER_VERSION = 1
PREFIX = struct.Struct("<4sBBHI")                # magic, version, kind, reserved, length
MAX_HEADER_BYTES = 16 << 20
REPLY = 0
KINDS = {"init": 1, "push": 2, "push_rows": 3, "pull": 4, "pull_rows": 5, "allreduce": 6,
         "checkpoint": 7, "bye": 8}
KIND_NAMES = {code: name for name, code in KINDS.items()}


class BadHeader(PSError):
    """A header that cannot be decoded or does not fit its kind. `rid`, `payload` and
    `expects_payload` are what could still be read (None if not), so that the server can
    drain the payloads and answer the request."""

    def __init__(self, text: str, source: int, fields: dict | None = None):
        super().__init__(text)
        self.source = source
        fields = fields or {}
        self.rid = fields["rid"] if _fits(fields.get("rid"), "int") else None
        self.payload = fields["payload"] if _fits(fields.get("payload"), "sizes") else None
        self.expects_payload = fields.get("expects_payload") is True


# -- encoding ----------------------------------------------------------------------------------
def _plain(value):
    """JSON for the numpy scalars a header may hold; anything else is a bug in the caller."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"a {type(value).__name__} cannot travel in a PS header")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_plain)


def encode(header: dict) -> bytes:
    """The wire form of a request (it has "op") or a reply (it has "ok")."""
    body = dict(header)
    kind = REPLY if "op" not in body else KINDS.get(body.pop("op"))
    if kind is None:
        raise PSError(f"ringps: cannot send a PS request of unknown kind {header['op']!r}")
    try:
        text = _ENCODER.encode(body).encode()
    except (TypeError, ValueError) as exc:
        raise PSError(f"ringps: cannot encode a PS header: {exc}") from None
    if PREFIX.size + len(text) > MAX_HEADER_BYTES:
        raise PSError(f"ringps: a PS header of {PREFIX.size + len(text)} bytes is over the "
                      f"limit of {MAX_HEADER_BYTES} bytes")
    return PREFIX.pack(MAGIC, HEADER_VERSION, kind, 0, len(text)) + text


# -- decoding ----------------------------------------------------------------------------------
def _is_count(value) -> bool:
    return type(value) is int and value >= 0       # not bool (a subclass of int)


FITS = {"int": _is_count,
        "sizes": lambda v: type(v) is list and all(_is_count(x) for x in v),
        "tuple": lambda v: type(v) is list and all(type(x) in (str, int) for x in v),
        "str": lambda v: type(v) is str,
        "bool": lambda v: type(v) is bool,
        "dict": lambda v: type(v) is dict}


def _fits(value, kind: str) -> bool:
    return FITS[kind](value)


def _check_fields(body: dict, required: dict, optional: dict) -> str | None:
    """What is wrong with the fields of `body`, or None."""
    for name, kind in required.items():
        if name not in body:
            return f"field {name!r} is missing"
        if not FITS[kind](body[name]):
            return _wrong_type(name, kind, body[name])
    for name, kind in optional.items():
        if name in body and not FITS[kind](body[name]):
            return _wrong_type(name, kind, body[name])
    return None


def _wrong_type(name: str, kind: str, value) -> str:
    return f"field {name!r} should be {kind_words(kind)}, got {type(value).__name__} " \
           f"{_short(value)}"


def kind_words(kind: str) -> str:
    return {"int": "a non-negative int", "sizes": "a list of non-negative ints",
            "tuple": "a list of str and int", "str": "a str", "bool": "a bool",
            "dict": "an object"}[kind]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _open(data: bytes, source: int) -> tuple[int, dict]:
    """(kind, body) of a header's bytes, checked for form but not yet for fields."""
    who = f"rank {source}"
    if len(data) < PREFIX.size:
        raise BadHeader(f"ringps: a PS header from {who} has {len(data)} bytes, fewer than "
                        f"its {PREFIX.size}-byte prefix", source)
    magic, version, kind, reserved, length = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise BadHeader(f"ringps: a message from {who} is not a PS header (it starts with "
                        f"{bytes(data[:4])!r}, not {MAGIC!r})", source)
    if reserved != 0:
        raise BadHeader(f"ringps: a PS header from {who} has reserved bits {reserved:#x} set",
                        source)
    if version != HEADER_VERSION:
        raise BadHeader(f"ringps: a PS header from {who} has format version {version}, this "
                        f"ringps reads {HEADER_VERSION}", source)
    if length != len(data) - PREFIX.size:
        raise BadHeader(f"ringps: a PS header from {who} says its body has {length} bytes, "
                        f"the message has {len(data) - PREFIX.size}", source)
    try:
        body = json.loads(str(memoryview(data)[PREFIX.size:], "utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadHeader(f"ringps: a PS header from {who} is not UTF-8 JSON ({exc})",
                        source) from None
    if not isinstance(body, dict):
        raise BadHeader(f"ringps: a PS header from {who} is a JSON {type(body).__name__}, "
                        f"not an object", source)
    if len(data) > MAX_HEADER_BYTES:
        raise BadHeader(f"ringps: a PS header from {who} has {len(data)} bytes, over the "
                        f"limit of {MAX_HEADER_BYTES}", source, body)
    return kind, body


def decode_request(data: bytes, source: int) -> dict:
    """A request header as the server's handlers read it (with "op")."""
    kind, body = _open(data, source)
    name = KIND_NAMES.get(kind)
    if name is None:
        raise BadHeader(f"ringps: a PS request from rank {source} has unknown kind {kind} "
                        f"(known: {', '.join(f'{c} {n}' for n, c in KINDS.items())})",
                        source, body)
    problem = _check_fields(body, protocol.FIELDS[name], protocol.OPTIONAL)
    if problem:
        raise BadHeader(f"ringps: a {name} request from rank {source}: {problem}",
                        source, body)
    if "group" in body:
        body["group"] = tuple(body["group"])
    body["op"] = name
    return body


def decode_reply(data: bytes, source: int) -> dict:
    kind, body = _open(data, source)
    if kind != REPLY:
        raise BadHeader(f"ringps: the reply from rank {source} is a header of kind {kind}, "
                        f"not a reply", source)
    problem = _check_fields(body, protocol.REPLY_FIELDS, protocol.REPLY_OPTIONAL)
    if problem is None and not body["ok"] and "error" not in body:
        problem = "a refusal without an 'error' text"
    if problem:
        raise BadHeader(f"ringps: the reply from rank {source}: {problem}", source)
    return body


def _receive(message: "MPI.Message", status: "MPI.Status") -> bytearray:
    data = bytearray(status.Get_count(MPI.BYTE))
    message.Recv([data, MPI.BYTE])
    return data


def _raw(array: np.ndarray) -> list:
    return [np.ascontiguousarray(array).reshape(-1).view(np.uint8), MPI.BYTE]


class ReplyHeader:
    """A reply header not yet received: `test()` probes for it and, once it is there,
    receives exactly its size and decodes it (what mpi4py's irecv does with pickle)."""

    def __init__(self, comm: "MPI.Comm", source: int, tag: int):
        self.comm, self.source, self.tag = comm, source, tag
        self.answer: dict | None = None
        self.failure: BadHeader | None = None

    def test(self) -> tuple[bool, dict | None]:
        if self.answer is None and self.failure is None:
            status = MPI.Status()
            message = self.comm.improbe(self.source, self.tag, status)
            if message is None:
                return False, None
            try:
                self.answer = decode_reply(_receive(message, status), self.source)
            except BadHeader as exc:
                self.failure = exc
        if self.failure is not None:
            raise self.failure
        return True, self.answer

    def Test(self) -> bool:
        return self.test()[0]


class Wire:
    def __init__(self, mpi_comm: "MPI.Comm"):
        """Collective over mpi_comm."""
        self.comm = mpi_comm.Dup()
        self.rank = self.comm.Get_rank()

    # -- the worker's side ------------------------------------------------------------------
    def request(self, dest: int, header: dict, payloads=()) -> list:
        """Send a header and its payloads; the requests to wait for before reusing them."""
        sent = [self.comm.Isend([encode(header), MPI.BYTE], dest, REQUEST)]
        sent += [self.comm.Isend(_raw(p), dest, DATA) for p in payloads]
        return sent

    def reply_header(self, source: int, rid: int) -> ReplyHeader:
        """The pending reply header of request `rid` (its test() gives the answer dict)."""
        return ReplyHeader(self.comm, source, reply_tags(rid)[0])

    def reply_payload(self, source: int, rid: int, out: np.ndarray):
        """Receive request `rid`'s reply payload straight into `out`."""
        return self.comm.Irecv(_raw(out), source, reply_tags(rid)[1])

    def goodbye(self, servers: list[int]) -> None:
        bye = encode({"op": "bye", "rid": 0})
        MPI.Request.Waitall([self.comm.Isend([bye, MPI.BYTE], dest, REQUEST)
                             for dest in servers])

    def world_ranks(self, sub: "MPI.Comm") -> list[int]:
        """This wire's rank of each member of `sub`, in sub's order."""
        return MPI.Group.Translate_ranks(sub.Get_group(), list(range(sub.Get_size())),
                                         self.comm.Get_group())

    @staticmethod
    def results(requests: list):
        """(all done?, what each request received: the answer dict for reply headers,
        None for the others). Raises BadHeader if a reply cannot be read."""
        plain = [r for r in requests if not isinstance(r, ReplyHeader)]
        headers = [r.test() for r in requests if isinstance(r, ReplyHeader)]
        if not (all(done for done, _ in headers) and MPI.Request.Testall(plain)):
            return False, None
        answers = iter(answer for _, answer in headers)
        return True, [next(answers) if isinstance(r, ReplyHeader) else None for r in requests]

    @staticmethod
    def done(requests: list) -> bool:
        headers = [r for r in requests if isinstance(r, ReplyHeader)]
        plain = [r for r in requests if not isinstance(r, ReplyHeader)]
        return all(h.Test() for h in headers) and MPI.Request.Testall(plain)

    # -- the server's side ------------------------------------------------------------------
    def next_request(self):
        """(header, source) of the next request from any worker, or None if none is there;
        BadHeader if it cannot be read (after it has been taken off the wire)."""
        status = MPI.Status()
        message = self.comm.improbe(MPI.ANY_SOURCE, REQUEST, status)
        if message is None:
            return None
        source = status.Get_source()
        return decode_request(_receive(message, status), source), source

    def payload(self, source: int, nbytes: int, timeout: float, who: str) -> np.ndarray:
        """The next payload from `source` (it follows its header at once)."""
        buf = np.empty(nbytes, dtype=np.uint8)
        request = self.comm.Irecv([buf, MPI.BYTE], source, DATA)
        idler, deadline = protocol.Idler(), time.monotonic() + timeout
        while not request.Test():
            if time.monotonic() > deadline:
                raise protocol.PSTimeout(f"ringps: {who} timed out receiving a payload from "
                                         f"rank {source}")
            idler.idle()
        return buf

    def reply(self, dest: int, rid: int, answer: dict, payload: np.ndarray | None) -> list:
        """Send an answer (and a payload, possibly empty, if the request expects one);
        returns (request, buffer) pairs to keep until they complete."""
        header_tag, data_tag = reply_tags(rid)
        header = encode(answer)
        sends = [(self.comm.Isend([header, MPI.BYTE], dest, header_tag), header)]
        if payload is not None:
            data = _raw(payload)
            sends.append((self.comm.Isend(data, dest, data_tag), data))
        return sends
