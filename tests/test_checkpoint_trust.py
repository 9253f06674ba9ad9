"""A checkpoint folder is only files, so a restore trusts none of it: each way users found
to make a restore load the wrong data, or part of the data, is refused by
`checkpoint.load` with a CheckpointError that says what is wrong. (tests/mpi/test_ps_trust.py
shows the same refusals on every rank of a job.)

Each tamper keeps everything else consistent (checksums recomputed, block lists edited in
both places where the attack needs it), so only the check under test can catch it."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ps import checkpoint
from ps.checkpoint import CheckpointError
from ps.server import BlockEntry
from checkpoint_tampers import (absolute_path, dotdot_path, entry_from_other, manifest,
                                rewrite_shard, save_manifest, symlink_to_another_checkpoint,
                                shard_file)

WORKERS = 2
POLICY = {"consistency": "bsp", "staleness": 0, "quorum": None}


def _entry(rows, width, dtype, handler, rng):
    entry = BlockEntry({"dtype": dtype, "width": width, "rows": rows, "handler": handler,
                        "policy": POLICY}, WORKERS)
    entry.value[...] = rng.standard_normal((rows, width)) if dtype != "int64" else \
        rng.integers(-99, 99, (rows, width))
    for state in entry.state.values():
        state[...] = rng.integers(1, 9, state.shape) if state.dtype.kind == "i" else \
            rng.random(state.shape)
    entry.version = int(rng.integers(1, 50))
    entry.clocks[...] = entry.version
    return entry


def _shards(seed: int) -> list[dict]:
    """Two servers' blocks: key 'w' in two blocks (one per server, Adam state), key '#3'
    (int64, no state) with a dense push waiting in its BSP round, key 'emb' (Adagrad) with
    a sparse push waiting."""
    rng = np.random.default_rng(seed)
    w0 = _entry(7, 5, "float32", ["adam", {"lr": 0.01}], rng)
    w1 = _entry(6, 5, "float32", ["adam", {"lr": 0.01}], rng)
    counter = _entry(4, 1, "int64", ["sum", {}], rng)
    counter.push(1, None, rng.integers(-5, 5, (4, 1)))
    emb = _entry(10, 3, "float64", ["adagrad", {"lr": 0.1}], rng)
    emb.push(0, np.array([2, 7]), rng.standard_normal((2, 3)))
    return [{("w", 0): w0, ("#3", 0): counter}, {("w", 1): w1, ("emb", 0): emb}]


def _write(folder: Path, shards: list[dict], checkpoint_id: str) -> None:
    written = [checkpoint.write_shard(str(folder), s, blocks, checkpoint_id)
               for s, blocks in enumerate(shards)]
    checkpoint.write_manifest(str(folder), checkpoint_id, written, WORKERS)


@pytest.fixture
def folders(tmp_path):
    """(this checkpoint, another checkpoint of the same keys with other values)."""
    mine, other = tmp_path / "ckpt", tmp_path / "other"
    _write(mine, _shards(1), "20250101-000000-aaaa")
    _write(other, _shards(2), "20250101-000000-bbbb")
    return mine, other


def block_position(index: list, key: str, block: int) -> int:
    return next(i for i, b in enumerate(index) if (b["key"], b["block"]) == (key, block))


# -- the tampers ------------------------------------------------------------------------------
def shard_entry_removed(mine, other):
    m = manifest(mine)
    del m["shards"][1]
    save_manifest(mine, m)


def first_shard_entry_removed(mine, other):
    m = manifest(mine)
    del m["shards"][0]
    save_manifest(mine, m)


def no_shards(mine, other):
    m = manifest(mine)
    m["shards"] = []
    save_manifest(mine, m)


def no_shards_no_servers(mine, other):
    m = manifest(mine)
    m["shards"], m["servers"] = [], 0
    save_manifest(mine, m)


def value_cut_to_one_row(mine, other):
    def cut(arrays, index):
        i = block_position(index, "w", 0)
        arrays[f"b{i}.value"] = arrays[f"b{i}.value"][:1].copy()
    rewrite_shard(mine, 0, cut)


def value_cut_and_listed_as_one_row(mine, other):
    def cut(arrays, index):
        i = block_position(index, "w", 0)
        arrays[f"b{i}.value"] = arrays[f"b{i}.value"][:1].copy()
        index[i]["arrays"]["value"][1] = [1, 5]
    rewrite_shard(mine, 0, cut, edit_listing=True)


def state_cut_and_listed_as_one_row(mine, other):
    def cut(arrays, index):
        i = block_position(index, "w", 0)
        arrays[f"b{i}.state.m"] = arrays[f"b{i}.state.m"][:1].copy()
        index[i]["arrays"]["state.m"][1] = [1, 5]
    rewrite_shard(mine, 0, cut, edit_listing=True)


def value_of_another_dtype(mine, other):
    def recast(arrays, index):
        i = block_position(index, "w", 0)
        arrays[f"b{i}.value"] = arrays[f"b{i}.value"].astype(np.float64)
        index[i]["arrays"]["value"][0] = "<f8"
    rewrite_shard(mine, 0, recast, edit_listing=True)


def clocks_of_three_workers(mine, other):
    def grow(arrays, index):
        i = block_position(index, "w", 0)
        arrays[f"b{i}.clocks"] = np.zeros(3, np.int64)
        index[i]["arrays"]["clocks"][1] = [3]
    rewrite_shard(mine, 0, grow, edit_listing=True)


def sparse_row_out_of_range(mine, other):
    def move(arrays, index):
        i = block_position(index, "emb", 0)
        arrays[f"b{i}.r0.p0.rows"] = np.array([2, 10])
    rewrite_shard(mine, 1, move)


def extra_shard_entry(mine, other):
    m = manifest(mine)
    extra = f"shard-2-{m['id']}.npz"
    shutil.copy(mine / m["shards"][1]["file"], mine / extra)
    m["shards"].append({**m["shards"][1], "file": extra})
    save_manifest(mine, m)


def shard_listed_twice(mine, other):
    m = manifest(mine)
    m["shards"].append(m["shards"][1])
    m["servers"] = 3
    save_manifest(mine, m)


def entries_swapped(mine, other):
    m = manifest(mine)
    m["shards"].reverse()
    save_manifest(mine, m)


def extra_array_in_shard(mine, other):
    rewrite_shard(mine, 0, lambda arrays, index: arrays.update({"b0.extra": np.ones(3)}))


def array_removed_from_shard(mine, other):
    def drop(arrays, index):
        del arrays[f"b{block_position(index, 'w', 0)}.state.m"]
    rewrite_shard(mine, 0, drop)


def array_unlisted_everywhere(mine, other):
    def drop(arrays, index):
        i = block_position(index, "w", 0)
        del arrays[f"b{i}.state.m"]
        del index[i]["arrays"]["state.m"]
    rewrite_shard(mine, 0, drop, edit_listing=True)


def block_removed_everywhere(mine, other):
    def drop(arrays, index):
        i = block_position(index, "w", 0)
        index[i]["key"] = "unused"                 # keeps the file's names; 'w' loses block 0
    rewrite_shard(mine, 0, drop, edit_listing=True)


def block_on_two_shards(mine, other):
    def rename(arrays, index):
        i = block_position(index, "#3", 0)
        index[i]["key"], index[i]["block"] = "w", 1          # shard 1 holds w block 1 too
    rewrite_shard(mine, 0, rename, edit_listing=True)


def version_edited_in_manifest(mine, other):
    m = manifest(mine)
    m["shards"][0]["blocks"][0]["version"] += 1
    save_manifest(mine, m)


def shard_file_missing(mine, other):
    shard_file(mine, 1).unlink()


def shard_bytes_changed(mine, other):
    with open(shard_file(mine, 0), "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xfe")


def manifest_missing(mine, other):
    (mine / "manifest.json").unlink()


def manifest_is_a_symlink(mine, other):
    (mine / "manifest.json").unlink()
    os.symlink(other / "manifest.json", mine / "manifest.json")


def id_with_a_path(mine, other):
    m = manifest(mine)
    m["id"] = "../other/x"
    save_manifest(mine, m)


def older_format(mine, other):
    m = manifest(mine)
    m["version"] = 1
    save_manifest(mine, m)


ID = "20250101-000000-aaaa"
CASES = {
    dotdot_path: r"invalid: shard entry 0 names '\.\./other/shard-0-20250101-000000-bbbb"
                 r"\.npz', not a plain file name inside the checkpoint folder",
    absolute_path: r"invalid: shard entry 0 names '/.*/other/shard-0-.*\.npz', not a plain "
                   r"file name inside the checkpoint folder",
    symlink_to_another_checkpoint: rf"invalid: shard file shard-0-{ID}\.npz is a symbolic "
                                   r"link \(to '.*/other/shard-0-.*'\); shard files must be "
                                   r"regular files inside the checkpoint folder",
    shard_entry_removed: rf"partial: manifest\.json lists 1 shard file\(s\) for a checkpoint "
                         rf"written by 2 server\(s\); it lacks shard-1-{ID}\.npz",
    first_shard_entry_removed: rf"partial: .* lists 1 shard file\(s\) .* lacks "
                               rf"shard-0-{ID}\.npz; refusing",
    no_shards: rf"partial: .* lists 0 shard file\(s\) for a checkpoint written by 2 "
               rf"server\(s\); it lacks shard-0-{ID}\.npz, shard-1-{ID}\.npz",
    no_shards_no_servers: r"corrupt: manifest\.json has servers 0, not a count >= 1",
    value_cut_to_one_row: r"corrupt: shard-0-.*: block 0 of key 'w': value is <f4 with shape "
                          r"\(1, 5\), manifest\.json says <f4 with shape \(7, 5\)",
    value_cut_and_listed_as_one_row: r"corrupt: .*block 0 of key 'w': value has shape "
                                     r"\(1, 5\), but the block is 7 x 5 .* must be \(7, 5\)",
    state_cut_and_listed_as_one_row: r"corrupt: .*block 0 of key 'w': state\.m has shape "
                                     r"\(1, 5\), not one row per row of the block \(7\)",
    value_of_another_dtype: r"corrupt: .*block 0 of key 'w': value is float64 .* not float32",
    clocks_of_three_workers: r"corrupt: .*block 0 of key 'w': clocks has shape \(3,\), .* "
                             r"written by 2 workers, so it must be \(2,\)",
    sparse_row_out_of_range: r"corrupt: .*block 0 of key 'emb': r0\.p0\.rows is not a list "
                             r"of row ids below 10",
    extra_shard_entry: rf"invalid: .* lists 3 shard files for a checkpoint written by 2 "
                       rf"server\(s\); extra: shard-2-{ID}\.npz",
    shard_listed_twice: rf"partial: .* lacks shard-2-{ID}\.npz",
    entries_swapped: rf"invalid: shard entry 0 names 'shard-1-{ID}\.npz', expected "
                     rf"'shard-0-{ID}\.npz' \(entries are in server order\)",
    extra_array_in_shard: r"invalid: shard-0-.* holds arrays manifest\.json does not list: "
                          r"b0\.extra",
    array_removed_from_shard: r"partial: shard-0-.* lacks arrays manifest\.json lists: "
                              r"b\d\.state\.m",
    array_unlisted_everywhere: r"corrupt: .*block 0 of key 'w': its arrays are not those of "
                               r"its rounds and handler state \(missing \['state\.m'\]",
    block_removed_everywhere: r"partial: key 'w' lacks block\(s\) \[0\]",
    block_on_two_shards: rf"invalid: block 1 of key 'w' is in both shard-0-{ID}\.npz and "
                         rf"shard-1-{ID}\.npz",
    version_edited_in_manifest: r"corrupt: the block list inside shard-0-.* differs from the "
                                r"one manifest\.json gives for it",
    shard_file_missing: rf"partial: shard file shard-1-{ID}\.npz is missing",
    shard_bytes_changed: r"corrupt: shard-0-.*\.npz does not match its SHA-256",
    manifest_missing: r"partial: it has no manifest\.json",
    manifest_is_a_symlink: r"invalid: manifest\.json is a symbolic link \(to '.*other/",
    id_with_a_path: r"invalid: manifest\.json has id '\.\./other/x', not letters, digits",
    older_format: r"is of format version 1: this ringps reads version 2; refusing",
}


@pytest.mark.parametrize("tamper", list(CASES), ids=[t.__name__ for t in CASES])
def test_a_tampered_checkpoint_is_refused_saying_what_is_wrong(folders, tamper):
    mine, other = folders
    checkpoint.load(str(mine))                       # intact before the tamper
    tamper(mine, other)
    with pytest.raises(CheckpointError) as refused:
        checkpoint.load(str(mine))
    text = str(refused.value)
    assert text.startswith(f"ringps: checkpoint {str(mine)!r}"), text
    assert re.search(CASES[tamper], text), text


def test_an_intact_checkpoint_restores_every_array_exactly(tmp_path):
    shards = _shards(7)
    _write(tmp_path, shards, "x-1")
    _, saved = checkpoint.load(str(tmp_path))
    written = {place: entry for blocks in shards for place, entry in blocks.items()}
    assert set(saved) == set(written)
    for place, entry in written.items():
        got = saved[place]
        assert got["version"] == entry.version and got["meta"] == entry.meta
        for name, want in [("value", entry.value), ("clocks", entry.clocks),
                           *[(f"state {s}", a) for s, a in entry.state.items()]]:
            have = got["value"] if name == "value" else got["clocks"] if name == "clocks" \
                else got["state"][name.split()[1]]
            assert have.dtype == want.dtype and have.shape == want.shape, (place, name)
            np.testing.assert_array_equal(have, want, err_msg=f"{place} {name}")
        pending = [(r, w, None if rows is None else list(rows), g)
                   for r, round_ in entry.rounds.items() for w, rows, g in round_.pushed]
        restored = [(r["round"], w, None if rows is None else list(rows), g)
                    for r in got["rounds"] for w, rows, g in r["pushed"]]
        assert [p[:3] for p in restored] == [p[:3] for p in pending]
        for (*_, g_have), (*_, g_want) in zip(restored, pending):
            np.testing.assert_array_equal(g_have, g_want)


def test_restore_into_refuses_a_value_that_would_broadcast():
    """The last line of defence on the server: an array of another shape is never written
    over a block with numpy broadcasting (a 1-row value over 7 rows)."""
    rng = np.random.default_rng(3)
    saved_entry = _entry(7, 5, "float32", ["adam", {"lr": 0.01}], rng)
    saved = {"meta": saved_entry.meta, "version": 3, "value": saved_entry.value[:1],
             "clocks": saved_entry.clocks, "rounds": [], "state": saved_entry.state}
    fresh = BlockEntry(saved_entry.meta, WORKERS)
    problem = checkpoint.restore_into(fresh, saved)
    assert problem and "value is float32 with shape (1, 5)" in problem and "(7, 5)" in problem
    assert not fresh.value.any() and fresh.version == 0


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "", "-lead", "x" * 65])
def test_a_shard_is_never_written_outside_its_folder(tmp_path, bad_id):
    with pytest.raises(CheckpointError, match="is not letters, digits and '-'"):
        checkpoint.write_shard(str(tmp_path / "ckpt"), 0, {}, bad_id)
    assert not any(tmp_path.rglob("*.npz"))
