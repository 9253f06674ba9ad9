"""This job's layout, discovered live: hosts -> nodes, local ranks, GPUs and how they are
linked (`nvidia-smi topo -m`, CuPy peer access when present), NUMA nodes, the MPI library.
Works on a CPU-only machine (no GPUs is an answer, not an error)."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess


def _run(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def gpus() -> dict:
    names = [line for line in _run(["nvidia-smi", "-L"]).splitlines() if line.strip()]
    info = {"count": len(names), "names": names, "topo": _run(["nvidia-smi", "topo", "-m"]),
            "peer_access": None}
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
        info["count"] = max(info["count"], n)
        info["peer_access"] = [[bool(i == j or cupy.cuda.runtime.deviceCanAccessPeer(i, j))
                                for j in range(n)] for i in range(n)]
    except Exception:          # no CuPy, no driver, no device: CPU-only is a valid answer
        pass
    return info


def numa_nodes() -> list[dict]:
    out = []
    for path in sorted(glob.glob("/sys/devices/system/node/node[0-9]*")):
        try:
            cpus = open(os.path.join(path, "cpulist")).read().strip()
        except OSError:
            cpus = "?"
        out.append({"node": int(path.rsplit("node", 1)[1]), "cpus": cpus})
    return out


def discover(comm) -> dict:
    """Collective over `comm`: every rank reports its host; rank 0's answer is complete."""
    import numpy as np
    import collectives as C
    name = socket.gethostname().encode()[:64]
    mine = np.zeros(64, np.uint8)
    mine[:len(name)] = np.frombuffer(name, np.uint8)
    table = np.zeros(64 * comm.size, np.uint8)
    table[64 * comm.rank:64 * (comm.rank + 1)] = mine
    C.allreduce(table, op="max", comm=comm, check=False)
    hosts = [bytes(table[64 * r:64 * (r + 1)]).rstrip(b"\0").decode() for r in range(comm.size)]
    nodes: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        nodes.setdefault(host, []).append(rank)
    return {"ranks": comm.size, "nodes": [{"host": h, "ranks": r} for h, r in nodes.items()],
            "communicator_nodes": comm.num_nodes, "local_size": comm.local_size,
            "cores": os.cpu_count(), "numa": numa_nodes(), "gpus": gpus(),
            **comm.transport.describe()}
