"""The same scripts under torchrun (no MPI: ringps's bytes go over gloo from torch's store)
and under mpiexec: same results, same training curve."""
import os
import subprocess
import sys

from mpirun import ROOT, run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(args, timeout=180):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        env.pop(name, None)
    out = subprocess.run(TORCHRUN + args, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def test_collectives_under_torchrun():
    rc, out = torchrun(["tests/scenarios/torch_collectives.py"])
    assert rc == 0, out
    for rank in (0, 1):
        assert f"rank {rank}: torch collectives ok on StoreCommunicator over ShmTransport" \
            in out, out     # ranks on one host found through the store share memory


def test_collectives_under_mpiexec():
    rc, out = run(3, ["tests/scenarios/torch_collectives.py"], timeout=180)
    assert rc == 0, out
    assert out.count("torch collectives ok on Communicator over ShmTransport") == 3, out


def _curve(text: str) -> list[str]:
    return [line.split(" (")[0] for line in text.splitlines() if line.startswith("epoch")]


def test_ddp_example_trains_the_same_under_torchrun_and_mpiexec():
    args = ["examples/ddp_train.py", "--algorithm", "ring", "--epochs", "2"]
    rc, via_torchrun = torchrun(args)
    assert rc == 0, via_torchrun
    rc, via_mpiexec = run(2, args, timeout=180)
    assert rc == 0, via_mpiexec
    assert _curve(via_torchrun) == _curve(via_mpiexec) and len(_curve(via_mpiexec)) == 2
