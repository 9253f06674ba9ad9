"""Checkpoints of the server shards: every shard writes its own file, a manifest commits them.

    dir/shard-<s>-<id>.npz   one per server s: values, handler state, versions, clocks and
                             any round still being summed, for each of its blocks (numpy .npz,
                             read without pickle), plus its block list as JSON; written to a
                             temporary name and renamed into place
    dir/manifest.json        written last (temporary name + rename): checkpoint <id>, the
                             number of servers and workers that wrote it, and per server its
                             shard file, that file's SHA-256, and its block list: each block's
                             key, index, meta (rows, width, dtype, handler, policy), version,
                             pending rounds, and the dtype and exact shape of every array

The manifest is the commit point. A crash before it leaves the previous checkpoint intact
(its manifest names its own files, which are removed only after the new manifest is in
place), so a crash loses the updates since the last committed checkpoint and nothing else.

A restore trusts nothing it reads, because a checkpoint folder is only files: someone may
have copied, edited or linked them. Every rank reads the whole checkpoint in `load` and
refuses it with CheckpointError, the same on every rank and before any server holds any of
it, unless
  - the manifest names exactly one file per server, each the plain name shard-<s>-<id>.npz
    in this folder (no path, no "..", and the file is a regular file, not a symbolic link);
  - each file has the SHA-256 the manifest gives, and its own block list is the manifest's;
  - each file holds exactly the arrays the list names, each with the listed dtype and shape,
    and those shapes are what the block's meta says (a value of rows x width elements,
    state with a row per row, a clock per worker): nothing missing, extra or mis-shaped;
  - every block of every key is there exactly once.
A server keeps whatever blocks the workers place on it, so a job may resume on a different
number of servers; `restore_into` refuses a block that does not fit the job's key.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from collectives import dtypes

FORMAT = "ringps-ps-checkpoint"
VERSION = 2
MANIFEST = "manifest.json"
CHECKPOINT_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")


class CheckpointError(RuntimeError):
    pass


def shard_name(server: int, checkpoint_id: str) -> str:
    return f"shard-{server}-{checkpoint_id}.npz"


def _check_id(checkpoint_id: str) -> None:
    if not isinstance(checkpoint_id, str) or not CHECKPOINT_ID.fullmatch(checkpoint_id):
        raise CheckpointError(f"ringps: checkpoint id {checkpoint_id!r} is not letters, digits "
                              f"and '-' (it becomes part of file names)")


# -- writing --------------------------------------------------------------------------------
def _replace_atomically(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(folder)                 # the rename itself survives a power cut
    finally:
        os.close(folder)


def _listing(arrays: dict[str, np.ndarray]) -> dict:
    """{name: [dtype, shape]} of a block's arrays, as the manifest records them."""
    return {name: [a.dtype.str, list(a.shape)] for name, a in arrays.items()}


def _block_arrays(entry) -> tuple[dict[str, np.ndarray], list]:
    """A block's arrays by name (value, clocks, state.<s>, r<j>.p<k>.rows|grad) and its
    pending rounds as [{"round", "pushed": [[worker, sparse?], ...]}]."""
    arrays = {"value": entry.value, "clocks": entry.clocks}
    arrays.update({f"state.{name}": state for name, state in entry.state.items()})
    rounds = []
    for j, (number, round_) in enumerate(sorted(entry.rounds.items())):
        for k, (worker, rows, grad) in enumerate(round_.pushed):
            if rows is not None:
                arrays[f"r{j}.p{k}.rows"] = np.asarray(rows)
            arrays[f"r{j}.p{k}.grad"] = grad
        rounds.append({"round": number, "pushed": [[w, rows is not None]
                                                   for w, rows, _ in round_.pushed]})
    return arrays, rounds


def _encode(blocks: dict) -> tuple[dict[str, np.ndarray], list]:
    """(the shard file's arrays, its block list)."""
    members, index = {}, []
    for i, ((key, block), entry) in enumerate(sorted(blocks.items())):
        arrays, rounds = _block_arrays(entry)
        members.update({f"b{i}.{name}": a for name, a in arrays.items()})
        index.append({"key": key, "block": block, "meta": entry.meta, "version": entry.version,
                      "state": sorted(entry.state), "rounds": rounds,
                      "arrays": _listing(arrays)})
    index = json.loads(json.dumps(index))          # exactly what a reader will see
    members["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    return members, index


def write_shard(path: str, server: int, blocks: dict, checkpoint_id: str) -> dict:
    """Write this server's shard file; its manifest entry (file, sha256, block list)."""
    _check_id(checkpoint_id)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    name = shard_name(server, checkpoint_id)
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    members, index = _encode(blocks)
    with open(tmp, "wb") as f:
        np.savez(f, **members)
    _replace_atomically(tmp, folder / name)
    return {"file": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
            "blocks": index}


def write_manifest(path: str, checkpoint_id: str, shards: list[dict], workers: int) -> None:
    """Commit checkpoint `checkpoint_id`: shards[s] is server s's write_shard entry."""
    _check_id(checkpoint_id)
    folder = Path(path)
    manifest = {"format": FORMAT, "version": VERSION, "id": checkpoint_id,
                "servers": len(shards), "workers": workers, "shards": shards}
    tmp = folder / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    _replace_atomically(tmp, folder / MANIFEST)
    keep = {s["file"] for s in shards}
    for old in folder.glob("shard-*.npz"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


# -- reading --------------------------------------------------------------------------------
def _refuse(path: str, state: str, detail: str) -> CheckpointError:
    return CheckpointError(f"ringps: checkpoint {path!r} is {state}: {detail}; refusing to "
                           f"restore it")


def _is_count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_plain_name(name: str) -> bool:
    """A file name that stays in its folder: no separator, not "." or "..", no NUL."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\0" not in name)


def _read_regular_file(path: str, folder: Path, name: str) -> bytes:
    """The bytes of folder/name, which must be a regular file and not a symbolic link."""
    file = folder / name
    try:
        info = os.lstat(file)
    except FileNotFoundError:
        raise _refuse(path, "partial", f"shard file {name} is missing") from None
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "invalid", f"shard file {name} is a symbolic link (to "
                      f"{os.readlink(file)!r}); shard files must be regular files inside "
                      f"the checkpoint folder")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "invalid", f"shard file {name} is not a regular file")
    fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):     # swapped since the lstat
            raise _refuse(path, "invalid", f"shard file {name} is not a regular file")
        return f.read()


def read_manifest(path: str) -> dict:
    """The manifest of the checkpoint at `path`, checked for form, counts and file names."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"ringps: no checkpoint at {path!r} (not a directory)")
    manifest_path = folder / MANIFEST
    if manifest_path.is_symlink():
        raise _refuse(path, "invalid", f"{MANIFEST} is a symbolic link (to "
                      f"{os.readlink(manifest_path)!r})")
    if not manifest_path.exists():
        raise _refuse(path, "partial", f"it has no {MANIFEST} (the write did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
        assert isinstance(manifest, dict) and manifest["format"] == FORMAT
    except (ValueError, KeyError, TypeError, AssertionError):
        raise _refuse(path, "corrupt", f"{MANIFEST} is not a ringps checkpoint "
                      f"manifest") from None
    if manifest.get("version") != VERSION:
        raise _refuse(path, f"of format version {manifest.get('version')!r}",
                      f"this ringps reads version {VERSION}")
    _check_manifest_fields(path, manifest)
    _check_shard_list(path, manifest)
    return manifest


def _check_manifest_fields(path: str, manifest: dict) -> None:
    checkpoint_id = manifest.get("id")
    if not isinstance(checkpoint_id, str) or not CHECKPOINT_ID.fullmatch(checkpoint_id):
        raise _refuse(path, "invalid", f"{MANIFEST} has id {checkpoint_id!r}, not letters, "
                      f"digits and '-'")
    for field in ("servers", "workers"):
        if not _is_count(manifest.get(field), least=1):
            raise _refuse(path, "corrupt", f"{MANIFEST} has {field} {manifest.get(field)!r}, "
                          f"not a count >= 1")
    if not isinstance(manifest.get("shards"), list):
        raise _refuse(path, "corrupt", f"{MANIFEST} has no list of shards")


def _check_shard_list(path: str, manifest: dict) -> None:
    """One entry per server, in server order, naming the plain file shard-<s>-<id>.npz,
    with a checksum and a block list."""
    shards, servers = manifest["shards"], manifest["servers"]
    for s, shard in enumerate(shards):
        if not isinstance(shard, dict) or not isinstance(shard.get("blocks"), list) or \
                not re.fullmatch(r"[0-9a-f]{64}", str(shard.get("sha256"))):
            raise _refuse(path, "corrupt", f"{MANIFEST}'s shard entry {s} is not a file name, "
                          f"a SHA-256 and a block list")
        if not _is_plain_name(shard.get("file")):
            raise _refuse(path, "invalid", f"shard entry {s} names {shard.get('file')!r}, not "
                          f"a plain file name inside the checkpoint folder")
    expected = [shard_name(s, manifest["id"]) for s in range(servers)]
    named = [shard["file"] for shard in shards]
    missing = [name for name in expected if name not in named]
    if missing:
        raise _refuse(path, "partial", f"{MANIFEST} lists {len(shards)} shard file(s) for a "
                      f"checkpoint written by {servers} server(s); it lacks "
                      f"{', '.join(missing)}")
    extra = [name for name in named if name not in expected]
    if extra or len(named) != servers:
        raise _refuse(path, "invalid", f"{MANIFEST} lists {len(shards)} shard files for a "
                      f"checkpoint written by {servers} server(s); extra: "
                      f"{', '.join(extra) or 'a file listed twice'}")
    for s, name in enumerate(named):
        if name != expected[s]:
            raise _refuse(path, "invalid", f"shard entry {s} names {name!r}, expected "
                          f"{expected[s]!r} (entries are in server order)")


def load(path: str) -> tuple[dict, dict]:
    """(manifest, {(key, block): saved block}) of a complete, intact checkpoint."""
    manifest = read_manifest(path)
    saved, where = {}, {}
    for shard in manifest["shards"]:
        blocks = _load_shard(path, shard, manifest["workers"])
        for place, block in blocks.items():
            if place in saved:
                raise _refuse(path, "invalid", f"block {place[1]} of key {place[0]!r} is in "
                              f"both {where[place]} and {shard['file']}")
            saved[place], where[place] = block, shard["file"]
    _check_every_block_there(path, saved)
    return manifest, saved


def _load_shard(path: str, shard: dict, workers: int) -> dict:
    name = shard["file"]
    data = _read_regular_file(path, Path(path), name)
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        raise _refuse(path, "corrupt", f"{name} does not match its SHA-256 in {MANIFEST}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {member: npz[member] for member in npz.files}
        index = json.loads(arrays.pop("index").tobytes())
    except Exception as exc:
        raise _refuse(path, "corrupt", f"cannot read {name} ({exc})") from None
    if index != shard["blocks"]:
        raise _refuse(path, "corrupt", f"the block list inside {name} differs from the one "
                      f"{MANIFEST} gives for it")
    _check_members(path, name, index, arrays)
    saved = {}
    for i, block in enumerate(index):
        mine = {n: arrays[f"b{i}.{n}"] for n in block["arrays"]}
        _check_shapes(path, f"{name}: block {block['block']} of key {block['key']!r}", block,
                      mine, workers)
        saved[(block["key"], block["block"])] = _decode(mine, block)
    return saved


_BLOCK_FIELDS = {"key": str, "block": int, "meta": dict, "version": int, "state": list,
                 "rounds": list, "arrays": dict}


def _check_members(path: str, name: str, index, arrays: dict) -> None:
    """The file holds exactly the arrays its (well-formed) block list names."""
    if not isinstance(index, list):
        raise _refuse(path, "corrupt", f"{name}'s block list is not a list")
    listed = set()
    for i, block in enumerate(index):
        if not isinstance(block, dict) or any(not isinstance(block.get(f), t) or
                                              isinstance(block.get(f), bool)
                                              for f, t in _BLOCK_FIELDS.items()):
            raise _refuse(path, "corrupt", f"entry {i} of {name}'s block list does not "
                          f"describe a block")
        listed |= {f"b{i}.{n}" for n in block["arrays"]}
    extra, missing = sorted(set(arrays) - listed), sorted(listed - set(arrays))
    if extra:
        raise _refuse(path, "invalid", f"{name} holds arrays {MANIFEST} does not list: "
                      f"{', '.join(extra[:5])}")
    if missing:
        raise _refuse(path, "partial", f"{name} lacks arrays {MANIFEST} lists: "
                      f"{', '.join(missing[:5])}")


def _shapes_of_block(block: dict, workers: int) -> dict[str, tuple | None]:
    """Every array this block must have, and the shape it must have where its meta fixes
    it (None where only its rows are fixed): a value of rows x width; a clock per worker;
    state arrays with a row per row (their width is the handler's: Adam's step count is
    one column); a dense pushed gradient like the value, a sparse one a row per row id."""
    meta = block["meta"]
    rows, width = meta.get("rows"), meta.get("width")
    if not (_is_count(rows) and _is_count(width)):
        raise ValueError(f"its meta has rows {rows!r} and width {width!r}")
    shapes = {"value": (rows, width), "clocks": (workers,)}
    shapes.update({f"state.{name}": None for name in block["state"]})
    for j, round_ in enumerate(block["rounds"]):
        if not _is_count(round_["round"]):
            raise ValueError(f"a pending round is numbered {round_['round']!r}")
        for k, (worker, sparse) in enumerate(round_["pushed"]):
            if not (_is_count(worker) and worker < workers):
                raise ValueError(f"round {round_['round']} has a push by worker {worker!r} "
                                 f"of {workers}")
            shapes[f"r{j}.p{k}.grad"] = None if sparse else (rows, width)
            if sparse:
                shapes[f"r{j}.p{k}.rows"] = None
    return shapes


def _check_shapes(path: str, what: str, block: dict, arrays: dict, workers: int) -> None:
    listing = block["arrays"]
    for name, array in arrays.items():
        dtype, shape = listing[name]
        if (array.dtype.str, list(array.shape)) != (dtype, shape):
            raise _refuse(path, "corrupt", f"{what}: {name} is {array.dtype.str} with shape "
                          f"{tuple(array.shape)}, {MANIFEST} says {dtype} with shape "
                          f"{tuple(shape)}")
    try:
        needed = _shapes_of_block(block, workers)
        storage = dtypes.lookup(block["meta"]["dtype"]).storage
    except (ValueError, TypeError, KeyError) as exc:
        raise _refuse(path, "corrupt", f"{what}: {exc}") from None
    unknown, surplus = sorted(set(needed) - set(arrays)), sorted(set(arrays) - set(needed))
    if unknown or surplus:
        raise _refuse(path, "corrupt", f"{what}: its arrays are not those of its rounds and "
                      f"handler state (missing {unknown}, not expected {surplus})")
    if arrays["value"].dtype != storage or arrays["clocks"].dtype != np.int64:
        raise _refuse(path, "corrupt", f"{what}: value is {arrays['value'].dtype} and clocks "
                      f"{arrays['clocks'].dtype}, not {storage} and int64")
    rows = block["meta"]["rows"]
    for name, array in arrays.items():
        want = needed.get(name)
        if want is not None and array.shape != want:
            raise _refuse(path, "corrupt", f"{what}: {name} has shape {array.shape}, but the "
                          f"block is {rows} x {block['meta']['width']} and was written by "
                          f"{workers} workers, so it must be {want}")
        if name.startswith("state.") and (array.ndim != 2 or array.shape[0] != rows):
            raise _refuse(path, "corrupt", f"{what}: {name} has shape {array.shape}, not one "
                          f"row per row of the block ({rows})")
        if name.endswith(".rows") and (array.ndim != 1 or array.dtype.kind not in "iu" or
                                       (array.size and (array.min() < 0 or
                                                        array.max() >= rows))):
            raise _refuse(path, "corrupt", f"{what}: {name} is not a list of row ids below "
                          f"{rows}")
        if name.endswith(".grad") and name.replace(".grad", ".rows") in arrays and \
                array.shape != (len(arrays[name.replace(".grad", ".rows")]),
                                block["meta"]["width"]):
            raise _refuse(path, "corrupt", f"{what}: {name} has shape {array.shape}, not one "
                          f"row of {block['meta']['width']} per row id")


def _check_every_block_there(path: str, saved: dict) -> None:
    """Each key's blocks are 0..n-1 with none missing (a key's blocks may be on any shard)."""
    indices: dict[str, list[int]] = {}
    for key, block in saved:
        indices.setdefault(key, []).append(block)
    for key, have in sorted(indices.items()):
        missing = sorted(set(range(max(have) + 1)) - set(have))
        if missing:
            raise _refuse(path, "partial", f"key {key!r} lacks block(s) {missing}")


def _decode(arrays: dict, block: dict) -> dict:
    rounds = []
    for j, r in enumerate(block["rounds"]):
        pushed = [(worker, arrays[f"r{j}.p{k}.rows"] if sparse else None,
                   arrays[f"r{j}.p{k}.grad"])
                  for k, (worker, sparse) in enumerate(r["pushed"])]
        rounds.append({"round": r["round"], "pushed": pushed})
    return {"meta": block["meta"], "version": block["version"], "value": arrays["value"],
            "clocks": arrays["clocks"], "rounds": rounds,
            "state": {name: arrays[f"state.{name}"] for name in block["state"]}}


def _misfit(name: str, saved: np.ndarray, fresh: np.ndarray) -> str | None:
    if saved.shape != fresh.shape or saved.dtype != fresh.dtype:
        return (f"the checkpoint's {name} is {saved.dtype} with shape {saved.shape}, the "
                f"job's is {fresh.dtype} with shape {fresh.shape}")
    return None


def restore_into(entry, saved: dict) -> str | None:
    """Fill a fresh BlockEntry from its saved form; a reason string if they do not fit
    (every array must have the fresh one's exact shape and dtype: nothing is broadcast)."""
    from .consistency import Round
    old, new = saved["meta"], entry.meta
    for field in ("rows", "width", "dtype"):
        if old[field] != new[field]:
            return f"the checkpoint has {field} {old[field]!r}, the job inits {new[field]!r}"
    if old["handler"][0] != new["handler"][0]:
        return (f"the checkpoint was written with handler {old['handler'][0]!r}, the job uses "
                f"{new['handler'][0]!r} (its state would not fit)")
    if len(saved["clocks"]) != len(entry.clocks):
        return (f"the checkpoint was written by {len(saved['clocks'])} workers, this job has "
                f"{len(entry.clocks)}")
    if sorted(saved["state"]) != sorted(entry.state):
        return "the checkpoint's handler state does not match the handler's"
    pairs = [("value", saved["value"], entry.value), ("clocks", saved["clocks"], entry.clocks)]
    pairs += [(f"state {n!r}", saved["state"][n], entry.state[n]) for n in entry.state]
    for name, stored, fresh in pairs:
        problem = _misfit(name, stored, fresh)
        if problem:
            return problem
    for _, stored, fresh in pairs:
        fresh[...] = stored
    entry.version = int(saved["version"])
    for r in saved["rounds"]:
        round_ = Round()
        for worker, rows, grad in r["pushed"]:
            round_.add(worker, None if rows is None else np.array(rows), np.array(grad))
        entry.rounds[r["round"]] = round_
    return None
