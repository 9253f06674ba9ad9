"""How long each fault of RELIABILITY.md takes to end its job, from a fresh launch to the
job's end (start-up included; the healthy row is the start-up alone):

    python tests/scenarios/time_faults.py        # prints a table; ~1.5 minutes
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mpirun import run  # noqa: E402

STUCK, TORCH, PS = ("tests/scenarios/stuck_rank.py", "tests/scenarios/torch_stuck.py",
                    "tests/scenarios/ps_stuck.py")
CASES = [
    ("healthy job (start-up only)", 4, [STUCK, "straggle:0"], 3),
    ("frozen rank, metadata check on", 4, [STUCK, "freeze"], 3),
    ("frozen rank inside the ring, check off", 4, [STUCK, "freeze-mid", "nocheck"], 3),
    ("straggler past the deadline", 4, [STUCK, "straggle:7"], 3),
    ("straggler within the deadline", 4, [STUCK, "straggle:2.5"], 4),
    ("rank raising an exception", 4, [STUCK, "raise"], 60),
    ("timeout caught, then normal exit", 4, [STUCK, "freeze", "check", "catch"], 3),
    ("exception inside DDP's backward", 2, [TORCH, "raise"], 3),
    ("frozen rank under DDP", 2, [TORCH, "freeze"], 3),
    ("frozen PS worker, BSP", 5, [PS, "freeze-worker", "bsp"], 3),
    ("frozen PS worker, ASP", 5, [PS, "freeze-worker", "asp"], 3),
    ("frozen PS server", 5, [PS, "freeze-server", "bsp"], 3),
]

print(f"{'fault':42} {'ranks':>5} {'deadline':>8} {'exit':>5} {'ended after':>11}")
for name, ranks, args, deadline in CASES:
    started = time.monotonic()
    rc, _ = run(ranks, args, timeout=120, env={"RINGPS_TIMEOUT": str(deadline)})
    print(f"{name:42} {ranks:5d} {deadline:7d}s {rc!s:>5} {time.monotonic() - started:10.1f}s",
          flush=True)
