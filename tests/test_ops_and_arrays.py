"""Reductions, dtypes and buffer wrapping, in one process."""
import subprocess
import sys

import numpy as np
import pytest

from collectives import arrays, dtypes, ops
from collectives.errors import InputError

torch = pytest.importorskip("torch")


def test_bfloat16_round_trip_matches_torch():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 100, 10000).astype(np.float32),
                             np.float32([0.0, -0.0, np.inf, -np.inf, 1e-40, 3.3895e38])])
    bf16 = dtypes.DTYPES["bfloat16"]
    ours = np.empty(values.size, np.uint16)
    bf16.from_compute(values, ours)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(bf16.to_compute(ours),
                                  torch.from_numpy(values).to(torch.bfloat16).float().numpy())


def test_bfloat16_nan_stays_nan():
    out = np.empty(1, np.uint16)
    dtypes.DTYPES["bfloat16"].from_compute(np.float32([np.nan]), out)
    assert np.isnan(dtypes.DTYPES["bfloat16"].to_compute(out)).all()


@pytest.mark.parametrize("name", ops.OP_NAMES)
def test_combine_matches_numpy_for_every_op(name):
    op = ops.lookup(name)
    a, b = np.float32([1, -2, 3]), np.float32([4, 5, -6])
    out = a.copy()
    ops.combine(op, dtypes.DTYPES["float32"], out, b)
    np.testing.assert_array_equal(out, op.ufunc(a, b))


def test_avg_divides_once_and_is_float_only():
    avg = ops.lookup("AVG")
    x = np.float64([3.0, 6.0])
    ops.finalize(avg, dtypes.DTYPES["float64"], x, 3)
    np.testing.assert_array_equal(x, [1.0, 2.0])
    with pytest.raises(TypeError, match="not defined for integer dtype int8"):
        ops.check_dtype(avg, dtypes.DTYPES["int8"])


def test_torch_views_are_zero_copy():
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int64):
        t = torch.zeros(2, 3, dtype=dtype)
        buf = arrays.as_buffer(t)
        assert buf.array.ctypes.data == t.data_ptr() and buf.array.shape == (6,)
        assert buf.dtype.name == str(dtype).removeprefix("torch.")


@pytest.mark.parametrize("bad,reason", [
    (np.zeros((4, 4)).T, "non-contiguous buffer"),
    (np.zeros(3, np.complex128), "unsupported dtype"),
    ((1, 2), "unsupported buffer type"),
    (torch.zeros(4, 4).t(), "non-contiguous buffer"),
    (torch.zeros(3, dtype=torch.uint16), "unsupported dtype"),
])
def test_rejections_carry_a_reason_for_the_peers(bad, reason):
    with pytest.raises(InputError) as info:
        arrays.as_buffer(bad)
    assert info.value.reason == reason and str(info.value).startswith("ringps: ")


def test_import_stays_light():
    code = "import sys, collectives; print('mpi4py.MPI' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
