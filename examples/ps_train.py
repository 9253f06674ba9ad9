"""Train a small CTR model (an embedding table + an MLP) on the sharded parameter server.

    mpiexec -n 6 python examples/ps_train.py --servers 2 --consistency ssp --staleness 3
    mpiexec -n 6 python examples/ps_train.py --servers 2          # bsp, asp and ssp in turn

The seed's hybrid recipe: the embedding table (the big, sparse part) is asynchronous, each
worker pushing only the rows its batch touched (push_rows, Adagrad with per-row state on
the servers); the dense MLP is synchronised with the chosen consistency (BSP, ASP or SSP
with staleness s; SGD on the servers, gradients averaged over the workers by `rescale`).

Data: a fixed synthetic click log (8 categorical fields of 500 ids each, plus 4 dense
features) whose labels come from a hidden logistic model, so the best possible accuracy is
known (printed as "bayes"); each worker trains on its own shard. Prints loss, test accuracy
and seconds per epoch; writes CSV, JSON and a plot of the loss curves to results/. Exits
non-zero if the final accuracy misses --target.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import ps

FIELDS, IDS_PER_FIELD, DENSE, DIM, HIDDEN = 8, 500, 4, 4, 32


def click_log(samples: int, seed: int = 0):
    """(ids [n, FIELDS] as table rows, dense [n, DENSE], labels [n], bayes-optimal labels);
    every seed draws other samples from the same hidden model."""
    hidden = np.random.default_rng(12345)
    truth = hidden.normal(0, 1.0, FIELDS * IDS_PER_FIELD)
    dense_truth = hidden.normal(0, 1.0, DENSE)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, IDS_PER_FIELD, (samples, FIELDS)) + np.arange(FIELDS) * IDS_PER_FIELD
    dense = rng.normal(0, 1.0, (samples, DENSE))
    logit = truth[ids].sum(axis=1) + dense @ dense_truth
    labels = (rng.random(samples) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return ids, dense.astype(np.float32), labels, (logit > 0).astype(np.float32)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(FIELDS * DIM + DENSE, HIDDEN), nn.ReLU(),
                                 nn.Linear(HIDDEN, 1))

    def forward(self, rows, dense):
        return self.net(torch.cat([rows.reshape(len(dense), -1), dense], dim=1)).squeeze(1)


def flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().numpy().reshape(-1) for t in tensors]).astype(np.float32)


def unflatten_into(model: nn.Module, values: np.ndarray) -> None:
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(values[offset:offset + p.numel()]).view_as(p))
            offset += p.numel()


def train(kv, data, test, args, mode: str, log) -> list[dict]:
    ids, dense, labels, _ = data
    mine = np.arange(kv.rank, len(labels), kv.size)          # this worker's shard
    model = MLP()
    rng = np.random.default_rng(1)
    table = (rng.normal(0, 0.1, (FIELDS * IDS_PER_FIELD, DIM))).astype(np.float32)
    kv.init("embedding", table, optimizer=("adagrad", {"lr": args.emb_lr}),
            consistency_name="asp")
    kv.init("dense", flat(model.parameters()),
            optimizer=("sgd", {"lr": args.lr, "rescale": 1 / kv.size}),
            consistency_name=mode, staleness=args.staleness)
    weights = np.empty_like(flat(model.parameters()))
    kv.wait(kv.pull("dense", weights))
    unflatten_into(model, weights)
    loss_fn = nn.BCEWithLogitsLoss()
    history = []
    for epoch in range(1, args.epochs + 1):
        start, losses = time.perf_counter(), []
        order = np.random.default_rng(epoch * 100 + kv.rank).permutation(mine)
        for batch in np.array_split(order, max(1, len(order) // args.batch)):
            rows = ids[batch].reshape(-1)
            unique, where = np.unique(rows, return_inverse=True)
            emb = torch.from_numpy(kv.wait(kv.pull_rows("embedding", unique))).requires_grad_()
            loss = loss_fn(model(emb[torch.from_numpy(where)], torch.from_numpy(dense[batch])),
                           torch.from_numpy(labels[batch]))
            model.zero_grad()
            loss.backward()
            push_rows = kv.push_rows("embedding", unique, emb.grad.numpy() * kv.size)
            kv.wait(kv.push_pull("dense", flat(p.grad for p in model.parameters()), weights))
            kv.wait(push_rows)
            unflatten_into(model, weights)
            losses.append(loss.item())
        seconds = time.perf_counter() - start
        accuracy = evaluate(kv, model, test)
        row = {"consistency": mode if mode != "ssp" else f"ssp(s={args.staleness})",
               "epoch": epoch, "loss": float(np.mean(losses)), "test_accuracy": accuracy,
               "seconds": seconds, "workers": kv.size, "servers": kv.servers}
        history.append(row)
        log(f"{row['consistency']:>9}  epoch {epoch}  loss {row['loss']:.4f}  test accuracy "
            f"{accuracy:.4f}  {seconds:.2f} s")
    return history


def evaluate(kv, model: nn.Module, test) -> float:
    ids, dense, labels, _ = test
    table = kv.wait(kv.pull_rows("embedding", np.arange(FIELDS * IDS_PER_FIELD)))
    with torch.no_grad():
        logits = model(torch.from_numpy(table[ids.reshape(-1)]), torch.from_numpy(dense))
    return float(((logits > 0).numpy() == labels).mean())


def plot(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in dict.fromkeys(r["consistency"] for r in history):
        mine = [r for r in history if r["consistency"] == mode]
        left.plot([r["epoch"] for r in mine], [r["loss"] for r in mine], marker="o", label=mode)
        right.plot([r["epoch"] for r in mine], [r["test_accuracy"] for r in mine], marker="o",
                   label=mode)
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.set(xlabel="epoch", ylabel="test accuracy", title="accuracy")
    for ax in (left, right):
        ax.set_xticks(sorted({r["epoch"] for r in history}))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"CTR model on the ringps PS ({history[0]['workers']} workers, "
                 f"{history[0]['servers']} servers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--consistency", default="bsp,asp,ssp",
                        help="dense-layer consistency, or several comma-separated to compare")
    parser.add_argument("--staleness", type=int, default=3, help="SSP staleness s")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=80000)
    parser.add_argument("--batch", type=int, default=256, help="samples per worker per step")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--emb-lr", type=float, default=0.1)
    parser.add_argument("--target", type=float, default=0.80, help="test accuracy to reach")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    data, test = click_log(args.samples), click_log(10000, seed=1)
    bayes = float((test[3] == test[2]).mean())
    history, is_leader = [], False
    for mode in args.consistency.split(","):
        kv = ps.init(servers=args.servers, exit_server=False)
        if kv is None:                           # a server shard: served this run, next
            continue
        is_leader = kv.rank == 0
        log = print if is_leader else (lambda *_: None)
        if mode == args.consistency.split(",")[0]:
            log(f"# {kv.size} workers, {kv.servers} server(s); target test accuracy "
                f"{args.target}, bayes-optimal {bayes:.4f}")
        history += train(kv, data, test, args, mode, log)
        kv.shutdown()
    if not is_leader:
        return 0
    folder = Path(args.out) / f"{time.strftime('%Y%m%d-%H%M%S')}-ps_train"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ps_train.json").write_text(json.dumps(history, indent=1))
    with open(folder / "ps_train.csv", "w") as f:
        f.write(",".join(history[0]) + "\n")
        f.writelines(",".join(str(v) for v in row.values()) + "\n" for row in history)
    try:
        plot(history, folder / "ps_train.png")
    except ImportError:
        print("# matplotlib not installed: no plot (pip install ringps[plot])")
    finals = {r["consistency"]: r["test_accuracy"] for r in history}
    missed = {mode: acc for mode, acc in finals.items() if acc < args.target}
    for mode, acc in finals.items():
        print(f"# {mode}: final test accuracy {acc:.4f} "
              f"({'reached' if acc >= args.target else 'MISSED'} target {args.target}), "
              f"{np.mean([r['seconds'] for r in history if r['consistency'] == mode]):.2f} s "
              f"per epoch")
    print(f"# results: {folder}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
