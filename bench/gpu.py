"""`--device cuda`: the two ceilings of a GPU collective, measured in the same run, and how
close the reduction kernels and the algorithms come to them.

    ceiling           bytes through device memory per byte of buffer
    copy (d2d)        2  (read + write): cupy's device-to-device copy
    torch a.add_(b)   3  (read a, read b, write a)
    kernels.combine   3  for each op x dtype, at --kernel-size (default 64 MB)

An algorithm's fraction counts what it must move through device memory on the GPU(s) the
ranks share: per rank, a reduce step reads two chunks and writes one, a copy step reads and
writes one, so the ring moves (n-1)/n S (3 + 2) per rank. Fractions are of the copy ceiling
times the number of GPUs in use."""
from __future__ import annotations

import time

import numpy as np

DEVICE_BYTES_PER_RANK = {       # x S, for n ranks: what one rank moves through its memory
    "ring": lambda n: (n - 1) / n * 5,
    "blocked": lambda n: (n - 1) / n * 5,
    "root": lambda n: 3 * (n - 1) + 2 * (n - 1) if n > 1 else 0,   # on rank 0; the busiest
    "host": lambda n: 2.0,                                           # staged d2h + h2d copies
    "rhd": lambda n: _rhd_bytes(n),                 # on a fold partner: the ring's, + 3S + 2S
}


def _rhd_bytes(n: int) -> float:
    p = 1 << (n.bit_length() - 1)
    return (p - 1) / p * 5 + (5 if n > p else 0)


def _best(run, tries: int = 5) -> float:
    import cupy
    best = np.inf
    for _ in range(tries):
        cupy.cuda.get_current_stream().synchronize()
        start = time.perf_counter()
        run()
        cupy.cuda.get_current_stream().synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def ceilings(nbytes: int = 256 << 20) -> dict:
    """GB/s of a d2d copy (2 bytes per byte) and of torch's add_ (3 bytes per byte)."""
    import cupy
    a = cupy.ones(nbytes // 4, dtype=cupy.float32)
    b = cupy.empty_like(a)
    result = {"copy_GBps": 2 * nbytes / _best(lambda: b.__setitem__(Ellipsis, a)) / 1e9,
              "device": cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
              .decode(errors="replace")}
    try:
        import torch
        ta = torch.ones(nbytes // 4, device="cuda")
        tb = torch.ones_like(ta)
        torch.cuda.synchronize()
        best = np.inf
        for _ in range(5):
            start = time.perf_counter()
            ta.add_(tb)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        result["torch_add_GBps"] = 3 * nbytes / best / 1e9
    except Exception as exc:            # torch without CUDA: say so, keep the copy ceiling
        result["torch_add_GBps"] = None
        result["torch_add_note"] = f"{type(exc).__name__}: {exc}"
    return result


def kernel_rows(nbytes: int, copy_GBps: float, ops=("sum", "prod", "max", "min"),
                dtypes=("float16", "bfloat16", "float32", "float64", "int32", "int64")) -> list:
    """Throughput of out = a op b per op and dtype, as GB/s and as a fraction of the copy
    ceiling (both count bytes moved through memory)."""
    import cupy
    from collectives import kernels
    rows = []
    for dtype in dtypes:
        storage = "uint16" if dtype == "bfloat16" else dtype
        count = nbytes // np.dtype(storage).itemsize
        a = cupy.ones(count, dtype=storage)
        b = cupy.ones(count, dtype=storage)
        for op in ops:
            seconds = _best(lambda: kernels.combine(op, dtype, a, b))
            gbps = 3 * count * a.itemsize / seconds / 1e9
            rows.append({"kernel": f"{op}/{dtype}", "bytes": count * a.itemsize,
                         "GBps": gbps, "fraction_of_copy": gbps / copy_GBps})
    return rows


def algorithm_fraction(algo: str, ranks: int, gpus: int, nbytes: int, seconds: float,
                       copy_GBps: float):
    """Fraction of the copy ceiling (times the GPUs in use) the algorithm's device traffic
    reached; None for strategies not modelled here."""
    per_rank = DEVICE_BYTES_PER_RANK.get(algo)
    if per_rank is None or seconds <= 0:
        return None
    moved = per_rank(ranks) * nbytes * (1 if algo in ("root", "host") else ranks)
    return moved / seconds / 1e9 / (copy_GBps * max(1, gpus))
