"""Rank-distinct inputs and float64 references.

Every rank draws every rank's input from the same seeds, so each can compute the reference
locally without trusting the collective under test. Values are chosen so that integer
results cannot overflow and float products stay in range; tolerances follow from the
dtype's unit roundoff and the number of rounding steps (one per rank).
"""
from __future__ import annotations

import numpy as np

TORCH_ONLY = {"bfloat16"}
EPS = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24, "float64": 2.0 ** -53}
INT_RANGES = {  # (sum/max/min range, prod range): 5 ranks can neither overflow nor leave float64
    "int8": ((-20, 20), (-2, 2)), "uint8": ((0, 50), (0, 3)),
    "int32": ((-10 ** 8, 10 ** 8), (-9, 9)), "int64": ((-10 ** 15, 10 ** 15), (-99, 99)),
}
REDUCE64 = {"sum": np.sum, "avg": np.mean, "prod": np.prod, "max": np.max, "min": np.min}


def draw(dtype: str, op: str, count: int, seed: int) -> np.ndarray:
    """One rank's input as float64 values exactly representable in `dtype`."""
    rng = np.random.default_rng(seed)
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype][op == "prod"]
        return rng.integers(low, high, count, endpoint=True).astype(np.float64)
    if op == "prod":
        values = rng.uniform(0.5, 1.5, count) * rng.choice([-1.0, 1.0], count)
    else:
        values = rng.uniform(-1, 1, count)
    return _round_to(values, dtype)


def _round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import torch
        return torch.from_numpy(values).to(torch.bfloat16).to(torch.float64).numpy()
    return values.astype(dtype).astype(np.float64)


def inputs(dtype: str, op: str, count: int, seed: int, ranks: int) -> list[np.ndarray]:
    return [draw(dtype, op, count, seed + r) for r in range(ranks)]


def expected(values: list[np.ndarray], op: str) -> np.ndarray:
    return REDUCE64[op](np.stack(values), axis=0) if values[0].size else values[0].copy()


def tolerance(values: list[np.ndarray], op: str, dtype: str) -> np.ndarray | float:
    """Absolute tolerance per element; 0 for exact cases (integers, max, min)."""
    if dtype not in EPS or op in ("max", "min"):
        return 0.0
    steps = len(values) + 1
    stack = np.abs(np.stack(values))
    if op == "prod":
        scale = np.prod(stack, axis=0)
    else:
        scale = np.sum(stack, axis=0) / (len(values) if op == "avg" else 1)
    return steps * EPS[dtype] * scale * 2 + np.finfo(np.float64).tiny


def skip_unfit(op: str, dtype: str) -> None:
    """Skip combinations a collective rightly rejects (avg on integers: see test_errors) or
    that need torch (bfloat16)."""
    import pytest
    if op == "avg" and dtype.startswith(("int", "uint")):
        pytest.skip("avg is rejected for integer dtypes (tested in test_errors)")
    if dtype in TORCH_ONLY:
        pytest.importorskip("torch")


def make_buffer(values: np.ndarray, dtype: str, kind: str = "numpy"):
    if kind == "torch" or dtype in TORCH_ONLY:
        import torch
        return torch.from_numpy(values).to(getattr(torch, dtype)).clone()
    return values.astype(dtype)


def as_float64(buf) -> np.ndarray:
    if type(buf).__module__.startswith("torch"):
        import torch
        return buf.to(torch.float64).numpy()
    return np.asarray(buf, dtype=np.float64)


def assert_close(got, want: np.ndarray, tol, what: str) -> None:
    got64 = as_float64(got)
    assert got64.shape == want.shape, f"{what}: shape {got64.shape} != {want.shape}"
    bad = np.abs(got64 - want) > tol
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        t = tol[i] if np.ndim(tol) else tol
        raise AssertionError(f"{what}: {int(bad.sum())} of {want.size} elements wrong; first at "
                             f"[{i}]: got {got64[i]!r}, want {want[i]!r} (tol {t:.3g})")
