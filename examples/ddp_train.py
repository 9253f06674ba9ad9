"""Train a small MLP with DistributedDataParallel over ringps (or gloo) on generated data.

    mpiexec -n 4 python examples/ddp_train.py --backend ringps --algorithm ring
    mpiexec -n 4 python examples/ddp_train.py --backend gloo

The data is a fixed synthetic 10-class problem (Gaussian clusters), the same on every run,
sharded across ranks; every rank starts from the same seed. Prints loss and accuracy per
epoch; --save writes the final parameters (rank 0) so runs can be compared.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import collectives.torch_backend  # noqa: F401  registers "ringps"


def dataset(samples: int = 4096, features: int = 32, classes: int = 10, seed: int = 0,
            spread: float = 0.35):
    """Gaussian clusters: centres drawn with std `spread`, unit noise (the larger the spread,
    the more separable the classes)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (classes, features))
    labels = rng.integers(0, classes, samples)
    x = centers[labels] + rng.normal(0, 1.0, (samples, features))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(labels)


def model(features: int = 32, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, classes))


def train(ddp: nn.Module, x, y, epochs: int, batch: int, lr: float, log=print):
    rank, size = dist.get_rank(), dist.get_world_size()
    mine_x, mine_y = x[rank::size], y[rank::size]
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for i in range(0, len(mine_x), batch):
            optimizer.zero_grad()
            loss = loss_fn(ddp(mine_x[i:i + batch]), mine_y[i:i + batch])
            loss.backward()
            optimizer.step()
            total += loss.item()
        with torch.no_grad():
            accuracy = (ddp.module(x).argmax(1) == y).float().mean().item()
        log(f"epoch {epoch + 1}: loss {total / max(1, len(mine_x) // batch):.4f} "
            f"accuracy {accuracy:.3f} ({time.perf_counter() - start:.2f} s)")
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="ringps", choices=["ringps", "gloo"])
    parser.add_argument("--algorithm", default=None, help="ringps allreduce algorithm")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--save", help="write the final parameters here (rank 0)")
    args = parser.parse_args()
    dist.init_process_group("ringps")
    group = None
    if args.backend == "gloo":
        group = dist.new_group(backend="gloo")
    elif args.algorithm:
        group = dist.new_group(backend="ringps", pg_options={"algorithm": args.algorithm})
    x, y = dataset()
    ddp = DDP(model(), process_group=group)
    log = print if dist.get_rank() == 0 else (lambda *_: None)
    log(f"{args.backend} {args.algorithm or ''} on {dist.get_world_size()} ranks")
    train(ddp, x, y, args.epochs, args.batch, args.lr, log)
    if args.save and dist.get_rank() == 0:
        torch.save(ddp.module.state_dict(), args.save)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
