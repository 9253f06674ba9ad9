"""PS headers on the wire (ps/wire.py): a fixed binary prefix and JSON, never pickle. Every
kind of header the workers and servers send comes back as it went; anything else is
refused with a BadHeader that names the sender and the fault, and keeps the request id and
payload sizes when they are still readable (so a server can answer instead of crashing).
tests/mpi/test_ps_trust.py sends such headers to a live server."""
import json
import pickle
import struct

import numpy as np
import pytest

from ps import wire
from ps.protocol import PSError
from ps.wire import BadHeader, decode_reply, decode_request, encode

COMMON = {"rid": 17, "payload": [40], "expects_payload": False}
REQUESTS = {
    "init": {"op": "init", "key": "w", "key_shown": "'w'", "block": 2, **COMMON,
             "meta": {"dtype": "float32", "width": 4, "rows": 10, "handler": ["sgd", {"lr": 0.1}],
                      "policy": {"consistency": "ssp", "staleness": 3, "quorum": None}}},
    "push": {"op": "push", "key": "#5", "key_shown": "5", "block": 0, "dtype": "bfloat16",
             **COMMON, "codec": "topk:0.01+ef", "count": 20},
    "push_rows": {"op": "push_rows", "key": "emb", "key_shown": "'emb'", "block": 1,
                  "dtype": "float64", **COMMON, "payload": [16, 48]},
    "pull": {"op": "pull", "key": "w", "key_shown": "'w'", "block": 0, "dtype": "float32",
             **COMMON, "payload": [], "expects_payload": True},
    "pull_rows": {"op": "pull_rows", "key": "e", "key_shown": "'e'", "block": 3,
                  "dtype": "int8", **COMMON, "payload": [24], "expects_payload": True},
    "allreduce": {"op": "allreduce", "rid": 9, "group": ("0,1,2", "hierarchical", 1),
                  "seq": 4, "part": 2, "expected": 3, "dtype": "float16", "reduce": "max",
                  "payload": [6], "expects_payload": True},
    "checkpoint": {"op": "checkpoint", "path": "/tmp/ckpt é", "id": "20250101-1-ab",
                   **COMMON, "payload": []},
    "bye": {"op": "bye", "rid": 0},
}


def raw(kind: int, body, version: int = wire.HEADER_VERSION, magic: bytes = wire.MAGIC,
        reserved: int = 0, length: int | None = None) -> bytes:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    size = len(text) if length is None else length
    return struct.pack("<4sBBHI", magic, version, kind, reserved, size) + text


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_every_request_kind_comes_back_as_it_went(kind):
    header = REQUESTS[kind]
    data = encode(header)
    assert data[:4] == b"RPSH" and data[4] == 1 and data[5] == wire.KINDS[kind]
    assert struct.unpack_from("<I", data, 8)[0] == len(data) - 12
    assert decode_request(data, source=3) == header


def test_replies_come_back_as_they_went_and_numpy_scalars_become_json():
    answer = {"ok": True, "version": np.int64(12), "file": "shard-0-x.npz",
              "blocks": [{"key": "w", "arrays": {"value": ["<f4", [3, 2]]}}]}
    got = decode_reply(encode(answer), source=1)
    assert got == {**answer, "version": 12} and type(got["version"]) is int
    assert decode_reply(encode({"ok": False, "error": "no"}), 1) == {"ok": False, "error": "no"}


BAD_REQUESTS = {
    "pickled": (pickle.dumps({"op": "pull", "rid": 1}), r"not a PS header \(it starts with"),
    "short": (b"RPSH\x01", r"has 5 bytes, fewer than its 12-byte prefix"),
    "version": (raw(4, {"rid": 1}, version=9), r"format version 9, this ringps reads 1"),
    "reserved": (raw(4, {"rid": 1}, reserved=1), r"reserved bits 0x1 set"),
    "length": (raw(4, {"rid": 1}, length=3), r"says its body has 3 bytes, the message has \d+"),
    "not json": (raw(4, b"{rid: 1}"), r"is not UTF-8 JSON"),
    "not utf8": (raw(4, b"\xff\xfe"), r"is not UTF-8 JSON"),
    "json list": (raw(4, [1, 2]), r"is a JSON list, not an object"),
    "unknown kind": (raw(42, {"rid": 5, "payload": [8]}), r"has unknown kind 42 \(known: 1 init"),
    "reply as request": (raw(0, {"rid": 5}), r"has unknown kind 0"),
    "missing field": (raw(4, {**REQUESTS["pull"], "op": None, "key": None}),
                      r"a pull request from rank 3: field 'key' should be a str, got NoneType"),
    "absent field": (raw(2, {k: v for k, v in REQUESTS["push"].items()
                             if k not in ("op", "dtype")}),
                     r"a push request from rank 3: field 'dtype' is missing"),
    "str block": (raw(4, {**REQUESTS["pull"], "block": "0"}),
                  r"field 'block' should be a non-negative int, got str '0'"),
    "bool block": (raw(4, {**REQUESTS["pull"], "block": True}),
                   r"field 'block' should be a non-negative int, got bool True"),
    "negative rid": (raw(4, {**REQUESTS["pull"], "rid": -1}),
                     r"field 'rid' should be a non-negative int"),
    "payload sizes": (raw(2, {**REQUESTS["push"], "payload": [8, "x"]}),
                      r"field 'payload' should be a list of non-negative ints"),
    "optional count": (raw(2, {**REQUESTS["push"], "count": 2.5}),
                       r"field 'count' should be a non-negative int, got float 2.5"),
    "group of lists": (raw(6, {**REQUESTS["allreduce"], "group": [[1]]}),
                       r"field 'group' should be a list of str and int"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_header_is_refused_naming_sender_and_fault(case):
    data, reason = BAD_REQUESTS[case]
    with pytest.raises(BadHeader, match=reason) as refused:
        decode_request(data, source=3)
    assert "rank 3" in str(refused.value) and refused.value.source == 3
    assert isinstance(refused.value, PSError)


def test_a_refused_header_keeps_what_is_needed_to_answer_it():
    with pytest.raises(BadHeader) as refused:
        decode_request(raw(2, {**REQUESTS["push"], "block": "x", "expects_payload": True}), 0)
    assert (refused.value.rid, refused.value.payload, refused.value.expects_payload) == \
        (17, [40], True)
    with pytest.raises(BadHeader) as unreadable:
        decode_request(raw(2, b"garbage"), 0)
    assert (unreadable.value.rid, unreadable.value.payload) == (None, None)


def test_an_oversize_header_is_refused_at_both_ends(monkeypatch):
    monkeypatch.setattr(wire, "MAX_HEADER_BYTES", 200)
    big = {**REQUESTS["pull"], "key": "k" * 300}
    with pytest.raises(PSError, match=r"header of \d+ bytes is over the limit of 200"):
        encode(big)
    with pytest.raises(BadHeader, match=r"has \d+ bytes, over the limit of 200") as refused:
        decode_request(raw(4, {k: v for k, v in big.items() if k != "op"}), 2)
    assert refused.value.rid == 17                # still answerable


@pytest.mark.parametrize("reply,reason", [
    ({"version": 3}, r"field 'ok' is missing"),
    ({"ok": "yes"}, r"field 'ok' should be a bool"),
    ({"ok": False}, r"a refusal without an 'error' text"),
    ({"ok": True, "version": "3"}, r"field 'version' should be a non-negative int"),
])
def test_a_bad_reply_is_refused(reply, reason):
    with pytest.raises(BadHeader, match=reason):
        decode_reply(raw(0, reply), source=4)
    with pytest.raises(BadHeader, match="is a header of kind 4, not a reply"):
        decode_reply(encode(REQUESTS["pull"]), source=4)


def test_what_cannot_travel_is_refused_before_sending():
    with pytest.raises(PSError, match="unknown kind 'drop_tables'"):
        encode({"op": "drop_tables", "rid": 1})
    with pytest.raises(PSError, match="a object cannot travel|cannot encode"):
        encode({"ok": True, "thing": object()})
