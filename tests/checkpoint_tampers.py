"""Tampering with a checkpoint folder the way a user or a script would: edit the manifest,
rewrite a shard file and recompute its checksum, point an entry at another checkpoint.
Used by tests/test_checkpoint_trust.py and tests/mpi/test_ps_trust.py."""
import hashlib
import json
from pathlib import Path

import numpy as np


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def save_manifest(folder: Path, m: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(m))


def shard_file(folder: Path, s: int) -> Path:
    return folder / manifest(folder)["shards"][s]["file"]


def members(file: Path) -> dict:
    with np.load(file, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def rewrite_shard(folder: Path, s: int, edit, edit_listing: bool = False) -> None:
    """Apply edit(arrays, index) to shard s, write it back, and make the manifest's
    checksum (and, with edit_listing, its block list) match the new file."""
    file = shard_file(folder, s)
    arrays = members(file)
    index = json.loads(arrays["index"].tobytes())
    edit(arrays, index)
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    with open(file, "wb") as f:
        np.savez(f, **arrays)
    m = manifest(folder)
    m["shards"][s]["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    if edit_listing:
        m["shards"][s]["blocks"] = index
    save_manifest(folder, m)


def entry_from_other(mine: Path, other: Path, s: int, file: str) -> None:
    """Point this manifest's shard entry s at `file`, with the other checkpoint's checksum
    and block list, as a copied entry would have."""
    m, theirs = manifest(mine), manifest(other)
    m["shards"][s] = {**theirs["shards"][s], "file": file}
    save_manifest(mine, m)


# -- tampers that point a shard entry outside the checkpoint folder ---------------------------
def dotdot_path(mine: Path, other: Path) -> None:
    entry_from_other(mine, other, 0, f"../other/{shard_file(other, 0).name}")


def absolute_path(mine: Path, other: Path) -> None:
    entry_from_other(mine, other, 0, str(shard_file(other, 0)))


def symlink_to_another_checkpoint(mine: Path, other: Path) -> None:
    name = shard_file(mine, 0).name
    (mine / name).unlink()
    (mine / name).symlink_to(shard_file(other, 0))
    m = manifest(mine)
    m["shards"][0] = {**manifest(other)["shards"][0], "file": name}
    save_manifest(mine, m)
