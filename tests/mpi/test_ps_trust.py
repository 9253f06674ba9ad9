"""The PS trusts neither files nor other processes' bytes, on real MPI ranks.

A checkpoint tampered in each way users found is refused by `ps.init(restore=...)` with
the same CheckpointError on every rank (workers and servers alike), before any server holds
any of it, so nothing is half-restored and no rank waits for another. (Every tamper, on
a fixed layout and with its exact message: tests/test_checkpoint_trust.py.)

A server sent a header it cannot decode answers that request with an error when the header
still names its request id, drains the payloads it announced, and goes on serving."""
import json
import pickle
import re
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import ps
from ps import wire as ps_wire

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from checkpoint_tampers import (absolute_path, dotdot_path, entry_from_other, manifest,
                                rewrite_shard, symlink_to_another_checkpoint,  # noqa: E402
                                save_manifest, shard_file)

WORLD = MPI.COMM_WORLD
pytestmark = pytest.mark.skipif(WORLD.size < 2, reason="a PS needs a server and a worker")
from test_ps import SERVERS, run_ps  # noqa: E402  (a PS of SERVERS shards around body)
TEXT_BYTES = 4096


def shared_tmpdir() -> Path:
    path = tempfile.mkdtemp(prefix="ringps-trust-") if WORLD.rank == 0 else ""
    text = np.zeros(TEXT_BYTES, np.uint8)
    text[:len(path)] = np.frombuffer(path.encode(), np.uint8)
    WORLD.Bcast(text, root=0)
    return Path(text.tobytes().rstrip(b"\0").decode())


def everyone_says(text: str) -> list[str]:
    """Every rank's text, gathered as fixed-size bytes (no pickle)."""
    mine = np.zeros(TEXT_BYTES, np.uint8)
    data = text.encode()[:TEXT_BYTES]
    mine[:len(data)] = np.frombuffer(data, np.uint8)
    every = np.empty((WORLD.size, TEXT_BYTES), np.uint8)
    WORLD.Allgather(mine, every)
    return [row.tobytes().rstrip(b"\0").decode() for row in every]


OPTIONS = {"optimizer": ("adam", {"lr": 0.01}), "block_bytes": 256}


def write_checkpoint(folder: Path, seed: int):
    """Keys 'w' (several blocks, Adam state) and 'emb' with rank-distinct pushes applied;
    on the workers, w's value as the checkpoint holds it."""
    def body(kv):
        rng = np.random.default_rng(seed)
        kv.init("w", rng.standard_normal((40, 3)))
        kv.init("emb", rng.standard_normal((9, 2)).astype(np.float32))
        mine = np.random.default_rng(seed + 1 + kv.rank)
        w = kv.wait(kv.push_pull("w", mine.standard_normal((40, 3)), np.empty((40, 3))))
        kv.wait(kv.push_rows("emb", [1, 5], mine.standard_normal((2, 2)).astype(np.float32)))
        kv.checkpoint(str(folder))
        return w
    return run_ps(body, **OPTIONS)


@pytest.fixture(scope="module")
def checkpoints():
    """Two intact checkpoints written by this job's servers: 'mine' and 'other'."""
    base = shared_tmpdir()
    write_checkpoint(base / "mine", seed=11)
    write_checkpoint(base / "other", seed=12)
    yield base / "mine", base / "other"
    WORLD.Barrier()
    if WORLD.rank == 0:
        shutil.rmtree(base)


def last(folder: Path) -> int:
    return len(manifest(folder)["shards"]) - 1


def shard_entry_removed(mine, other):
    m = manifest(mine)
    del m["shards"][-1]
    save_manifest(mine, m)


def no_shards(mine, other):
    m = manifest(mine)
    m["shards"] = []
    save_manifest(mine, m)


def value_cut_to_one_row(mine, other):
    def cut(arrays, index):
        arrays["b0.value"] = arrays["b0.value"][:1].copy()
    rewrite_shard(mine, 0, cut)


def extra_shard_entry(mine, other):
    m = manifest(mine)
    extra = f"shard-{len(m['shards'])}-{m['id']}.npz"
    shutil.copy(shard_file(mine, 0), mine / extra)
    m["shards"].append({**m["shards"][0], "file": extra})
    save_manifest(mine, m)


def shard_file_missing(mine, other):
    shard_file(mine, last(mine)).unlink()


CASES = {
    dotdot_path: r"is invalid: shard entry 0 names '\.\./other/shard-0-.*\.npz', not a plain "
                 r"file name inside the checkpoint folder",
    absolute_path: r"is invalid: shard entry 0 names '/.*/other/shard-0-.*\.npz', not a plain "
                   r"file name",
    symlink_to_another_checkpoint: r"is invalid: shard file shard-0-.*\.npz is a symbolic link",
    shard_entry_removed: rf"is partial: manifest\.json lists {SERVERS - 1} shard file\(s\) for "
                         rf"a checkpoint written by {SERVERS} server\(s\); it lacks "
                         rf"shard-{SERVERS - 1}-",
    no_shards: r"is partial: manifest\.json lists 0 shard file\(s\) .* it lacks shard-0-",
    value_cut_to_one_row: r"is corrupt: shard-0-.*\.npz: block \d+ of key '\w+': value is "
                          r"<f\d with shape \(1, \d\), manifest\.json says <f\d with shape "
                          r"\(\d+, \d\)",
    extra_shard_entry: rf"is invalid: .* lists {SERVERS + 1} shard files .* extra: "
                       rf"shard-{SERVERS}-",
    shard_file_missing: rf"is partial: shard file shard-{SERVERS - 1}-.*\.npz is missing",
}


@pytest.mark.parametrize("tamper", list(CASES), ids=[t.__name__ for t in CASES])
def test_a_tampered_checkpoint_is_refused_the_same_on_every_rank(checkpoints, tamper):
    intact_mine, intact_other = checkpoints
    base = shared_tmpdir()
    mine, other = base / "mine", base / "other"
    if WORLD.rank == 0:
        shutil.copytree(intact_mine, mine)
        shutil.copytree(intact_other, other)
        tamper(mine, other)
    WORLD.Barrier()
    try:
        with pytest.raises(ps.CheckpointError) as refused:
            ps.init(servers=SERVERS, exit_server=False, timeout=60, restore=str(mine))
        text = str(refused.value)
        assert text.startswith(f"ringps: checkpoint {str(mine)!r} "), text
        assert re.search(CASES[tamper], text), text
        assert set(everyone_says(text)) == {text}      # workers and servers alike
    finally:
        WORLD.Barrier()
        if WORLD.rank == 0:
            shutil.rmtree(base)


def test_an_intact_checkpoint_restores():
    """The tampers start from checkpoints like this one, which restores (so each refusal
    above is the tamper's doing)."""
    base = shared_tmpdir()
    written = write_checkpoint(base, seed=5)

    def body(kv):
        kv.init("w", np.zeros((40, 3)))
        kv.init("emb", np.zeros((9, 2), np.float32))
        return kv.wait(kv.pull("w", np.empty((40, 3)))), kv.version("w")
    got = run_ps(body, restore=str(base), **OPTIONS)
    WORLD.Barrier()
    if WORLD.rank == 0:
        shutil.rmtree(base)
    if got is not None:
        np.testing.assert_array_equal(got[0], written)
        assert got[1] == 1


def _send_raw(kv, data: bytes, payloads=()) -> None:
    comm = kv.wire.comm
    requests = [comm.Isend([data, MPI.BYTE], kv.server_ranks[0], 1)]
    requests += [comm.Isend([p, MPI.BYTE], kv.server_ranks[0], 2) for p in payloads]
    MPI.Request.Waitall(requests)


def _answer(kv, rid: int) -> dict:
    reply = kv.wire.reply_header(kv.server_ranks[0], rid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, answer = reply.test()
        if done:
            return answer
        time.sleep(1e-3)
    raise AssertionError(f"server {kv.server_ranks[0]} did not answer request {rid}")


def _header(kind: int, body: dict) -> bytes:
    text = json.dumps(body).encode()
    return struct.pack("<4sBBHI", b"RPSH", 1, kind, 0, len(text)) + text


def test_a_server_answers_headers_it_cannot_decode_and_keeps_serving():
    def body(kv):
        kv.init("w", np.zeros(6))
        if kv.rank == 0:
            rid = kv.next_rid()
            _send_raw(kv, _header(42, {"rid": rid, "payload": []}))
            answer = _answer(kv, rid)
            assert not answer["ok"] and "unknown kind 42" in answer["error"], answer
            rid = kv.next_rid()                  # a push whose block is a string, payload sent
            bad = {"rid": rid, "payload": [48], "expects_payload": False, "key": "w",
                   "key_shown": "'w'", "block": "0", "dtype": "float64"}
            _send_raw(kv, _header(ps_wire.KINDS["push"], bad), [np.full(6, 1e6).view(np.uint8)])
            answer = _answer(kv, rid)
            assert not answer["ok"] and "field 'block' should be a non-negative int" in \
                answer["error"], answer
            _send_raw(kv, pickle.dumps({"op": "pull", "rid": kv.next_rid()}))   # no answer
        kv.comm.barrier()
        grads = [np.random.default_rng(40 + r).standard_normal(6) for r in range(kv.size)]
        out = kv.wait(kv.push_pull("w", grads[kv.rank], np.empty(6)))
        np.testing.assert_allclose(out, np.sum(grads, axis=0, dtype=np.float64), rtol=1e-12)
        assert kv.version("w") == 1              # the refused push was never applied
    run_ps(body)
