"""DDP training in which the last rank fails at step 2; the others must not wait torch's
30 minutes. Run by tests/test_teardown.py under mpiexec or torchrun:

    python torch_stuck.py raise|freeze

raise:  the last rank's gradient hook raises inside backward (unhandled)
freeze: the last rank SIGSTOPs itself before its second backward (hung, not dead)
"""
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import collectives.torch_backend  # noqa: F401  registers "ringps"

mode = sys.argv[1]
dist.init_process_group("ringps")
rank, size = dist.get_rank(), dist.get_world_size()
victim = size - 1
torch.manual_seed(0)
model = DDP(torch.nn.Linear(32, 8))
step = {"n": 0}


def fail_in_backward(grad):
    if mode == "raise" and rank == victim and step["n"] == 2:
        raise RuntimeError(f"rank {rank} failed inside backward on purpose")
    return grad


model.module.weight.register_hook(fail_in_backward)
started = time.monotonic()
for step["n"] in range(4):
    loss = model(torch.randn(16, 32)).square().mean()
    if mode == "freeze" and rank == victim and step["n"] == 2:
        os.kill(os.getpid(), signal.SIGSTOP)
    loss.backward()
    print(f"rank {rank}: step {step['n']} done", flush=True)
print(f"rank {rank}: FINISHED after {time.monotonic() - started:.1f} s", flush=True)
