"""Checkpoints of the server shards: every shard writes its own file, a manifest commits them.

    dir/shard-<s>-<id>.npz   one per server: values, handler state, versions, clocks and any
                             round still being summed, for each of its blocks (numpy .npz, no
                             pickle), written to a temporary name and renamed into place
    dir/manifest.json        written last (temporary name + rename): the shard files of
                             checkpoint <id> with their SHA-256, and who wrote them

The manifest is the commit point. A crash before it leaves the previous checkpoint intact
(its manifest names its own files, which are removed only after the new manifest is in
place); a missing manifest, a missing shard or a checksum that differs is refused with a
clear error, never half-loaded. On restore every rank reads the whole checkpoint, so every
rank fails the same way on a bad one, and a server keeps whatever blocks the workers place
on it, so a job may resume on a different number of servers.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

FORMAT = "ringps-ps-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_atomically(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def _encode(blocks: dict) -> dict[str, np.ndarray]:
    arrays, index = {}, []
    for i, ((key, block), entry) in enumerate(sorted(blocks.items())):
        rounds = []
        for j, (number, round_) in enumerate(sorted(entry.rounds.items())):
            for k, (worker, rows, grad) in enumerate(round_.pushed):
                if rows is not None:
                    arrays[f"b{i}.r{j}.p{k}.rows"] = rows
                arrays[f"b{i}.r{j}.p{k}.grad"] = grad
            rounds.append({"round": number, "pushed": [[w, rows is not None]
                                                       for w, rows, _ in round_.pushed]})
        arrays[f"b{i}.value"] = entry.value
        arrays[f"b{i}.clocks"] = entry.clocks
        for name, state in entry.state.items():
            arrays[f"b{i}.state.{name}"] = state
        index.append({"key": key, "block": block, "meta": entry.meta, "version": entry.version,
                      "state": sorted(entry.state), "rounds": rounds})
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    return arrays


def write_shard(path: str, server: int, blocks: dict, checkpoint_id: str) -> dict:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"shard-{server}-{checkpoint_id}.npz"
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **_encode(blocks))
    _replace_atomically(tmp, folder / name)
    return {"file": name, "sha256": _sha256(folder / name), "blocks": len(blocks)}


def write_manifest(path: str, checkpoint_id: str, shards: list[dict], workers: int) -> None:
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


def read_manifest(path: str) -> dict:
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"ringps: no checkpoint at {path!r} (not a directory)")
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"ringps: checkpoint {path!r} is partial: it has no {MANIFEST} "
                              f"(the write did not finish), refusing to restore it")
    try:
        manifest = json.loads(manifest_path.read_text())
        assert manifest["format"] == FORMAT and isinstance(manifest["shards"], list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"ringps: checkpoint {path!r} is corrupt: {MANIFEST} is not a "
                              f"ringps checkpoint manifest") from None
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"ringps: checkpoint {path!r} has format version "
                              f"{manifest.get('version')}, this ringps reads {VERSION}")
    return manifest


def load(path: str) -> tuple[dict, dict]:
    """(manifest, {(key, block): saved block}) of a complete, intact checkpoint."""
    manifest = read_manifest(path)
    saved = {}
    for shard in manifest["shards"]:
        file = Path(path) / shard["file"]
        if not file.exists():
            raise CheckpointError(f"ringps: checkpoint {path!r} is partial: shard file "
                                  f"{shard['file']} is missing")
        if _sha256(file) != shard["sha256"]:
            raise CheckpointError(f"ringps: checkpoint {path!r} is corrupt: {shard['file']} "
                                  f"does not match its SHA-256 in {MANIFEST}")
        try:
            with np.load(file, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            index = json.loads(arrays["index"].tobytes())
        except Exception as exc:
            raise CheckpointError(f"ringps: checkpoint {path!r} is corrupt: cannot read "
                                  f"{shard['file']} ({exc})") from None
        for i, block in enumerate(index):
            saved[(block["key"], block["block"])] = _decode(arrays, i, block)
    return manifest, saved


def _decode(arrays: dict, i: int, block: dict) -> dict:
    rounds = []
    for j, r in enumerate(block["rounds"]):
        pushed = [(worker, arrays[f"b{i}.r{j}.p{k}.rows"] if sparse else None,
                   arrays[f"b{i}.r{j}.p{k}.grad"])
                  for k, (worker, sparse) in enumerate(r["pushed"])]
        rounds.append({"round": r["round"], "pushed": pushed})
    return {"meta": block["meta"], "version": block["version"], "value": arrays[f"b{i}.value"],
            "clocks": arrays[f"b{i}.clocks"], "rounds": rounds,
            "state": {name: arrays[f"b{i}.state.{name}"] for name in block["state"]}}


def restore_into(entry, saved: dict) -> str | None:
    """Fill a fresh BlockEntry from its saved form; a reason string if they do not fit."""
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
    entry.value[...] = saved["value"]
    for name, array in saved["state"].items():
        entry.state[name][...] = array
    entry.version = int(saved["version"])
    entry.clocks[...] = saved["clocks"]
    for r in saved["rounds"]:
        round_ = Round()
        for worker, rows, grad in r["pushed"]:
            round_.add(worker, None if rows is None else np.array(rows), np.array(grad))
        entry.rounds[r["round"]] = round_
    return None
