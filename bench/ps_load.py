"""`python -m bench ps-load`: the parameter server under sustained load, and whether it
loses anything.

A parameter server that drops or doubles a push now and then still trains, just a little
worse, so a lost update is found only by counting. Here W workers (default 8) push and pull
for `--seconds` (default 60) against S server shards (default 2), as fast as they can,
each on its own random sequence of keys, and every update is accounted for.

Keys are int64 under the `accumulate` handler (value += pushed) and ASP (a push is applied
when it arrives, a pull answered at once), in four sizes (256 B, 4 KB, 64 KB and 1 MB; the
largest span several blocks, so several shards). Every push of worker w adds 1 to the even
elements (a count) and w + 1 to the odd ones (a signature). At the end every worker has
waited for all its pushes, the workers add up who pushed what (acknowledged pushes), and
worker 0 pulls every key:

    lost        acknowledged pushes the server never applied: pushes - the smallest count
                element (summed over keys; must be 0)
    duplicated  pushes applied twice: the largest count element - pushes (must be 0)
    torn        elements whose count or signature differs from the key's first element (a
                push applied to some blocks only): must be 0
    misattributed  keys whose signature is not what the acknowledged pushes add up to although
                every count is right (a push applied with another worker's values): must be 0
    versions    keys whose version (updates the servers applied) is not the number of
                pushes: must be 0
    stale       pulls that did not see this worker's own earlier acknowledged pushes
                (read-your-writes, which ASP still owes a single worker): must be 0

and reports push and pull latency (p50, p99, max over every operation of every worker, in
microseconds) and throughput (operations per second, and MB/s of keys pushed and pulled,
1e6 bytes). Writes ps_load.csv and results.json under results/<timestamp>-ps-load/; exits 1
if anything was lost.

    python -m bench ps-load                              # 8 workers + 2 servers, 60 s
    python -m bench ps-load --seconds 10 --workers 3 --servers 1
    mpiexec -n 10 python -m bench ps-load --servers 2    # workers: the other 8 ranks
"""
from __future__ import annotations

import sys
import time

import numpy as np

from . import results, tables

KEY_BYTES = (256, 4 << 10, 64 << 10, 1 << 20)
BLOCK_BYTES = 256 << 10            # a 1 MB key is 4 blocks, spread over the shards
TIMEOUT = 120.0                    # a server silent this long fails the run (PSTimeout)


def key_name(i: int) -> str:
    return f"load{i:03d}"


def key_elements(i: int) -> int:
    return KEY_BYTES[i % len(KEY_BYTES)] // 8


def increment(elements: int, worker: int) -> np.ndarray:
    """What worker `worker` adds per push: 1 (count) in even elements, worker + 1 (its
    signature) in odd ones."""
    grad = np.ones(elements, np.int64)
    grad[1::2] = worker + 1
    return grad


class Load:
    """One worker's side of the run: its pushes, pulls, latencies and checks."""

    def __init__(self, kv, keys: int, seed: int):
        self.kv, self.keys = kv, keys
        self.worker = kv.rank
        self.rng = np.random.default_rng(seed + self.worker)
        self.grads = [increment(key_elements(i), self.worker) for i in range(keys)]
        self.outs = [np.empty(key_elements(i), np.int64) for i in range(keys)]
        self.pushes = np.zeros(keys, np.int64)          # acknowledged, per key
        self.latency = {"push": [], "pull": []}
        self.bytes = {"push": 0, "pull": 0}
        self.stale = 0
        self.errors: list[str] = []

    def push(self, i: int) -> None:
        start = time.perf_counter()
        try:
            self.kv.wait(self.kv.push(key_name(i), self.grads[i]))
        except Exception as exc:            # noqa: BLE001 - counted, reported, not acknowledged
            self.errors.append(f"push {key_name(i)}: {type(exc).__name__}: {exc}")
            return
        self.latency["push"].append(time.perf_counter() - start)
        self.pushes[i] += 1
        self.bytes["push"] += self.grads[i].nbytes

    def pull(self, i: int) -> None:
        start = time.perf_counter()
        try:
            self.kv.wait(self.kv.pull(key_name(i), out=self.outs[i]))
        except Exception as exc:            # noqa: BLE001
            self.errors.append(f"pull {key_name(i)}: {type(exc).__name__}: {exc}")
            return
        self.latency["pull"].append(time.perf_counter() - start)
        self.bytes["pull"] += self.outs[i].nbytes
        if self.outs[i][0::2].min() < self.pushes[i]:     # my own pushes must be in it
            self.stale += 1

    def step(self) -> None:
        """A push to a random key, then a pull of a random key."""
        self.push(int(self.rng.integers(self.keys)))
        self.pull(int(self.rng.integers(self.keys)))


def run_load(kv, args, progress) -> tuple[Load, float]:
    """Every worker: declare the keys, start together, push and pull until time is up."""
    for i in range(args.keys):
        kv.init(key_name(i), np.zeros(key_elements(i), np.int64))
    load = Load(kv, args.keys, args.seed)
    kv.comm.barrier()
    start = time.monotonic()
    deadline = start + args.seconds
    while (now := time.monotonic()) < deadline:
        load.step()
        if progress is not None:
            progress.update(min(now - start, args.seconds) - progress.n)
            progress.set_postfix(ops=2 * len(load.latency["push"]), refresh=False)
    kv.wait_all()
    seconds = time.monotonic() - start
    kv.comm.barrier()
    return load, seconds


def audit(kv, keys: int, pushes: np.ndarray) -> dict:
    """Worker 0, after every worker's pushes are acknowledged: pull every key and account
    for every push. pushes[w, k]: acknowledged pushes of worker w to key k."""
    per_key = []
    totals = {"lost": 0, "duplicated": 0, "torn": 0, "misattributed": 0, "versions": 0}
    signature = (pushes * (np.arange(len(pushes)) + 1)[:, None]).sum(axis=0)
    for i in range(keys):
        value = kv.wait(kv.pull(key_name(i), out=np.empty(key_elements(i), np.int64)))
        counts, signs = value[0::2], value[1::2]
        want = int(pushes[:, i].sum())
        row = {"key": key_name(i), "bytes": key_elements(i) * 8, "pushes": want,
               "applied_min": int(counts.min()), "applied_max": int(counts.max()),
               "lost": max(want - int(counts.min()), 0),
               "duplicated": max(int(counts.max()) - want, 0),
               "torn": int((counts != counts[0]).sum() + (signs != signs[0]).sum()),
               "version": kv.version(key_name(i))}
        row["misattributed"] = int(bool((counts == want).all() and (signs != signature[i]).any()))
        row["version_ok"] = row["version"] == want
        for name in ("lost", "duplicated", "torn", "misattributed"):
            totals[name] += row[name]
        totals["versions"] += not row["version_ok"]
        per_key.append(row)
    return {"totals": totals, "keys": per_key}


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {"count": 0, "p50_us": float("nan"), "p99_us": float("nan"),
                "max_us": float("nan")}
    us = np.asarray(samples) * 1e6
    return {"count": int(us.size), "p50_us": float(np.percentile(us, 50)),
            "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max())}


def summarize(loads: list[dict], seconds: float) -> list[dict]:
    """One row per operation (push, pull, both): latency percentiles and throughput."""
    rows = []
    for op in ("push", "pull", "all"):
        ops = ("push", "pull") if op == "all" else (op,)
        samples = [s for load in loads for o in ops for s in load["latency"][o]]
        nbytes = sum(load["bytes"][o] for load in loads for o in ops)
        rows.append({"op": op, **percentiles(samples), "ops_per_s": len(samples) / seconds,
                     "MB_per_s": nbytes / seconds / 1e6})
    return rows


def main(args) -> int:
    """Every rank: servers serve inside ps.init and leave; workers load, then report."""
    import ps
    kv = ps.init(servers=args.servers, ranks_per_node=args.ranks_per_node, consistency="asp",
                 optimizer="accumulate", block_bytes=BLOCK_BYTES, timeout=TIMEOUT)
    comm = kv.comm
    if args.workers is not None and args.workers != comm.size:
        kv.shutdown()
        if comm.rank == 0:
            print(f"bench: error: --workers {args.workers}, but this job has {comm.size} worker "
                  f"ranks ({comm.size + args.servers} ranks, {args.servers} servers)",
                  file=sys.stderr)
        return 2
    progress = _progress(args) if comm.rank == 0 else None
    try:
        load, seconds = run_load(kv, args, progress)
    finally:
        if progress is not None:
            progress.close()
    mine = {"latency": load.latency, "bytes": load.bytes, "stale": load.stale,
            "errors": load.errors, "pushes": load.pushes, "seconds": seconds}
    loads = comm.mpi.gather(mine, root=0)
    report = None
    if comm.rank == 0:
        pushes = np.stack([m["pushes"] for m in loads])
        report = audit(kv, args.keys, pushes)
    comm.barrier()
    kv.shutdown()
    if comm.rank != 0:
        return 0
    return publish(args, comm.size, loads, report)


def publish(args, workers: int, loads: list[dict], report: dict) -> int:
    seconds = max(m["seconds"] for m in loads)
    rows = summarize(loads, seconds)
    totals = report["totals"]
    totals["stale"] = sum(m["stale"] for m in loads)
    errors = [e for m in loads for e in m["errors"]]
    totals["errors"] = len(errors)
    ok = not any(totals.values())
    folder = results.new_folder(args.out, "ps-load")
    fields = ["op", "count", "p50_us", "p99_us", "max_us", "ops_per_s", "MB_per_s"]
    results.write_csv(folder / "ps_load.csv", rows, fields)
    results.write_json(folder / "results.json", {
        "command": "python -m bench " + " ".join(sys.argv[1:]), "workers": workers,
        "servers": args.servers, "seconds": seconds, "keys": args.keys,
        "key_bytes": list(KEY_BYTES), "block_bytes": BLOCK_BYTES, "consistency": "asp",
        "optimizer": "accumulate", **totals, "ok": ok, "rows": rows, "per_key": report["keys"],
        "pushes_per_worker": [int(m["pushes"].sum()) for m in loads], "first_errors": errors[:20]})
    if args.json:
        for row in rows:
            print(results.json_line(row))
        print(results.json_line({"lost": totals["lost"], **totals, "ok": ok}))
    elif not args.quiet:
        print(f"# ps-load: {workers} workers, {args.servers} servers, {seconds:.1f} s, "
              f"{args.keys} int64 keys of {'/'.join(_size(b) for b in KEY_BYTES)} (ASP, "
              f"accumulate); latency in us, MB/s of keys pushed and pulled (1e6 bytes)")
        print(tables.text_table(fields, [[r["op"], r["count"], *(f"{r[f]:.1f}" for f in
                                                                 fields[2:])] for r in rows]))
        print(f"# pushes acknowledged: {sum(int(m['pushes'].sum()) for m in loads)}; lost "
              f"{totals['lost']}, duplicated {totals['duplicated']}, torn {totals['torn']}, "
              f"misattributed {totals['misattributed']}, version mismatches "
              f"{totals['versions']}, stale reads {totals['stale']}, "
              f"errors {totals['errors']}")
        print(f"# results: {folder}")
    if not ok:
        print(f"ps-load: FAILED: {', '.join(f'{k} {v}' for k, v in totals.items() if v)}"
              + (f"; first error: {errors[0]}" if errors else ""), file=sys.stderr)
        return 1
    return 0


def _size(nbytes: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def _progress(args):
    if args.quiet or args.json:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=args.seconds, desc="ps-load", unit="s", file=sys.stderr, leave=False,
                dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}")
