"""What a result was measured on, for the JSON next to it: ranks, nodes, versions, MPI
library, CPU and GPU."""
from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return [line for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def describe(comm) -> dict:
    return {
        "ranks": comm.size,
        "nodes": comm.num_nodes,
        "ranks_per_node": comm.local_size,
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpus": _gpus(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **comm.transport.describe(),
        "versions": {p: _version(p) for p in ("ringps", "numpy", "mpi4py", "mpich", "torch")},
    }
