"""Launch a command on n local MPI ranks with a hard timeout (the whole job is killed)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mpiexec_path() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def run(n: int, args: list[str], timeout: float = 300, env: dict | None = None):
    """Run `python args...` on n ranks; returns (returncode, output). rc is None on timeout."""
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "RINGPS_UNDER_MPIEXEC": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [mpiexec_path(), "-n", str(n), sys.executable, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out + f"\n[mpirun] killed after {timeout} s"
