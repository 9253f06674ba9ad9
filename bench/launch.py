"""Am I under mpiexec? If not, either start local ranks (--np N) or say how to."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from collectives.rendezvous import under_mpi  # noqa: F401  (SLURM_PROCID alone does not count:
#                                                  in a batch script --np must still start ranks)


def env_rank() -> int:
    for name in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def respawn(np_: int, argv: list[str]) -> None:
    """Replace this process with `mpiexec -n np python -m bench argv` (argv without --np)."""
    launcher = mpiexec()
    if launcher is None:
        raise SystemExit("bench: error: no mpiexec found (pip install mpich, or load your MPI)")
    os.execv(launcher, [launcher, "-n", str(np_), sys.executable, "-m", "bench", *argv])


def strip_np(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--np":
            skip = True
        elif not arg.startswith("--np="):
            out.append(arg)
    return out
