"""The crash-restore drill's job (run by tests/test_crash_restore.py on 2 workers + 2 server
shards): a small MLP classifier trained under BSP on the parameter server.

    python ps_crash_restore.py MODE OUT [TIMEOUT]

    straight   STEPS steps, no checkpoint, no crash
    crash      a checkpoint to OUT/ckpt every EVERY steps; the last server rank SIGKILLs
               itself when the first push of step CRASH_AT reaches it (the launcher then
               ends the job)
    resume     restore=OUT/ckpt, then train on to STEPS

Everything is a function of the step and the worker (data shard, minibatch, initial values),
BSP sums each round in worker order, and the server optimizers (momentum, Adam) keep their
state in the checkpoint, so a resumed run retraces the straight run bit for bit.

Worker 0 leaves, in OUT (each written to a temporary name and renamed, so a kill never
leaves half a file): at-checkpoint.npz (values, versions and step of the last checkpoint,
as it saw them), MODE-last-step.npz (the same after its last completed step), restored.npz
(what a resumed job pulled right after the restore), MODE-final.npz (final values and test
accuracy). TIMEOUT is the PS timeout in seconds (default 60): the workers' bound on waiting
for a dead server if the launcher did not end the job.
"""
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import ps

SERVERS, STEPS, EVERY, CRASH_AT = 2, 30, 8, 20
FEATURES, HIDDEN, BATCH, SAMPLES = 10, 16, 64, 4000
KEYS = ("hidden", "out")


def dataset():
    """(train x, train y, test x, test y): labels from a hidden linear teacher, some noise."""
    rng = np.random.default_rng(2024)
    teacher = rng.standard_normal(FEATURES)
    x = rng.standard_normal((SAMPLES, FEATURES)).astype(np.float32)
    y = (x @ teacher + 0.3 * rng.standard_normal(SAMPLES) > 0).astype(np.float32)
    half = SAMPLES // 2
    return x[:half], y[:half], x[half:], y[half:]


def initial_values() -> dict:
    """hidden: (features + 1) x HIDDEN (weights, then the bias row); out: HIDDEN + 1."""
    rng = np.random.default_rng(7)
    return {"hidden": (0.3 * rng.standard_normal((FEATURES + 1, HIDDEN))).astype(np.float32),
            "out": (0.3 * rng.standard_normal(HIDDEN + 1)).astype(np.float32)}


def forward(params: dict, x: np.ndarray):
    w1, b1 = params["hidden"][:-1], params["hidden"][-1]
    w2, b2 = params["out"][:-1], params["out"][-1]
    h = np.maximum(x @ w1 + b1, 0)
    return h, h @ w2 + b2


def gradients(params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """Of the mean logistic loss over the batch."""
    h, z = forward(params, x)
    dz = (1 / (1 + np.exp(-z)) - y) / len(y)
    dh = np.outer(dz, params["out"][:-1]) * (h > 0)
    return {"hidden": np.vstack([x.T @ dh, dh.sum(axis=0)]).astype(np.float32),
            "out": np.append(h.T @ dz, dz.sum()).astype(np.float32)}


def accuracy(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    return float(((forward(params, x)[1] > 0) == (y > 0)).mean())


def minibatch(step: int, worker: int, workers: int, x, y):
    mine = np.arange(worker, len(y), workers)
    pick = np.random.default_rng([step, worker]).choice(mine, BATCH, replace=False)
    return x[pick], y[pick]


def save(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def arm_the_crash() -> None:
    """This server SIGKILLs itself on the first push of step CRASH_AT it receives."""
    from ps import server
    push = server.BlockEntry.push

    def push_or_die(entry, worker, rows, grad):
        if entry.clocks[worker] + 1 == CRASH_AT:
            print(f"server rank {MPI.COMM_WORLD.rank}: SIGKILL at step {CRASH_AT}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        push(entry, worker, rows, grad)

    server.BlockEntry.push = push_or_die


def snapshot(kv, params: dict, step: int) -> dict:
    return {**{k: params[k] for k in KEYS}, "step": step,
            "versions": np.array([kv.version(k) for k in KEYS])}


def main(mode: str, out: Path, timeout: float) -> None:
    world = MPI.COMM_WORLD
    folder = out / "ckpt"
    if mode == "crash" and world.rank == world.size - 1:
        arm_the_crash()
    kv = ps.init(servers=SERVERS, consistency="bsp", block_bytes=256, timeout=timeout,
                 restore=str(folder) if mode == "resume" else None)
    kv.init("hidden", initial_values()["hidden"],
            optimizer=("momentum", {"lr": 0.2, "momentum": 0.9, "rescale": 1 / kv.size}))
    kv.init("out", initial_values()["out"],
            optimizer=("adam", {"lr": 0.05, "rescale": 1 / kv.size}))
    params = {k: kv.wait(kv.pull(k, np.empty_like(v))) for k, v in initial_values().items()}
    done = kv.version("hidden")
    if mode == "resume" and kv.rank == 0:
        save(out / "restored.npz", **snapshot(kv, params, done))
    x, y, test_x, test_y = dataset()
    for step in range(done + 1, STEPS + 1):
        grads = gradients(params, *minibatch(step, kv.rank, kv.size, x, y))
        for handle in [kv.push_pull(k, grads[k], params[k]) for k in KEYS]:
            kv.wait(handle)
        if mode == "crash" and step % EVERY == 0:
            kv.checkpoint(str(folder))
            if kv.rank == 0:
                save(out / "at-checkpoint.npz", **snapshot(kv, params, step))
        if kv.rank == 0:
            save(out / f"{mode}-last-step.npz", **snapshot(kv, params, step))
            print(f"worker 0: step {step} done at {time.monotonic():.3f}", flush=True)
    if kv.rank == 0:
        final = accuracy(params, test_x, test_y)
        save(out / f"{mode}-final.npz", **snapshot(kv, params, STEPS), accuracy=final,
             initial_accuracy=accuracy(initial_values(), test_x, test_y))
        print(f"worker 0: {mode} run done, test accuracy {final:.4f}", flush=True)
    kv.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 60.0)
