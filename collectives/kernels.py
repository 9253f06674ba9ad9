"""Reduction kernels for device buffers (CuPy), the GPU half of ops.py's table.

One templated CUDA kernel, `reduce2<T, OP>`: out[i] = a[i] OP b[i]. `b` may point into a
peer's buffer mapped through CUDA IPC, which makes it the fused receive-and-reduce of the
transport seam (the peer's bytes are read once, straight from its memory, never staged).
Where out, a and b are 16-byte aligned, each thread moves 16 bytes at a time (uint4
loads: 4 floats, 8 halves, 2 doubles); the elements past the last whole vector, or all of
them when the pointers are not aligned, go one by one. Half and bfloat16 compute in float
and round to nearest even, as torch does; integers wrap like the type.

    op     functor                        avg: a sum here, then `scale` by 1/n once at the end
    sum    a + b
    prod   a * b
    max    a > b ? a : b  (NaN-propagating for floats: fmax would drop a NaN)
    min    a < b ? a : b

The module compiles lazily (NVRTC) on first use and caches one kernel per (dtype, op).
Importing it needs nothing; calling it needs CuPy and a device.
"""
from __future__ import annotations

from functools import lru_cache

CUDA_TYPES = {"float16": "__half", "bfloat16": "bf16", "float32": "float",
              "float64": "double", "int8": "signed char", "uint8": "unsigned char",
              "int32": "int", "int64": "long long"}
FUNCTORS = {"sum": "OpSum", "avg": "OpSum", "prod": "OpProd", "max": "OpMax", "min": "OpMin"}
THREADS = 256

SOURCE = r"""
#include <cuda_fp16.h>

// bfloat16 as its bits (CuPy ships cuda_fp16.h but not cuda_bf16.h): widen by a shift,
// narrow with round-to-nearest-even, NaN kept quiet, as dtypes._BFloat16 does on the host.
struct bf16 { unsigned short bits; };

template <typename T> struct Math { typedef T type; };
template <> struct Math<__half> { typedef float type; };
template <> struct Math<bf16> { typedef float type; };

template <typename T> __device__ __forceinline__ typename Math<T>::type up(T v) { return v; }
template <> __device__ __forceinline__ float up<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float up<bf16>(bf16 v) {
    return __uint_as_float(((unsigned int)v.bits) << 16); }
template <typename T> __device__ __forceinline__ T down(typename Math<T>::type v) { return v; }
template <> __device__ __forceinline__ __half down<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ bf16 down<bf16>(float v) {
    unsigned int u = __float_as_uint(v);
    bf16 r;
    if (v != v) { r.bits = (unsigned short)((u >> 16) | 0x0040); return r; }
    r.bits = (unsigned short)((u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16);
    return r; }

template <typename M> __device__ __forceinline__ bool is_nan(M v) { return v != v; }

struct OpSum { template <typename M> __device__ M operator()(M a, M b) const { return a + b; } };
struct OpProd { template <typename M> __device__ M operator()(M a, M b) const { return a * b; } };
struct OpMax { template <typename M> __device__ M operator()(M a, M b) const {
    return (is_nan(a) || a > b) ? a : b; } };
struct OpMin { template <typename M> __device__ M operator()(M a, M b) const {
    return (is_nan(a) || a < b) ? a : b; } };

template <typename T, typename OP>
__device__ __forceinline__ T apply(T a, T b) { return down<T>(OP()(up<T>(a), up<T>(b))); }

template <typename T, typename OP>
__global__ void reduce2(T* out, const T* a, const T* b, long long n, int vectorised) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long done = 0;
    if (vectorised) {      // 16-byte loads and stores
        const int per = 16 / sizeof(T);
        const long long vectors = n / per;
        const uint4* va = reinterpret_cast<const uint4*>(a);
        const uint4* vb = reinterpret_cast<const uint4*>(b);
        uint4* vo = reinterpret_cast<uint4*>(out);
        for (long long v = start; v < vectors; v += stride) {
            uint4 x = va[v], y = vb[v], z;
            const T* xs = reinterpret_cast<const T*>(&x);
            const T* ys = reinterpret_cast<const T*>(&y);
            T* zs = reinterpret_cast<T*>(&z);
            #pragma unroll
            for (int k = 0; k < 16 / (int)sizeof(T); ++k) zs[k] = apply<T, OP>(xs[k], ys[k]);
            vo[v] = z;
        }
        done = vectors * per;
    }
    for (long long i = done + start; i < n; i += stride) out[i] = apply<T, OP>(a[i], b[i]);
}

template <typename T>
__global__ void scale(T* out, long long n, double factor) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = down<T>((typename Math<T>::type)(up<T>(out[i]) * factor));
}
"""


def _names() -> list[str]:
    names = [f"reduce2<{t}, {f}>" for t in CUDA_TYPES.values()
             for f in sorted(set(FUNCTORS.values()))]
    return names + [f"scale<{t}>" for t in CUDA_TYPES.values()]


@lru_cache(maxsize=None)
def _module():
    import cupy
    return cupy.RawModule(code=SOURCE, options=("-std=c++14",), name_expressions=_names())


@lru_cache(maxsize=None)
def kernel(name: str):
    return _module().get_function(name)


def _grid(count: int, per_thread: int) -> int:
    import cupy
    device = cupy.cuda.Device()
    most = device.attributes["MultiProcessorCount"] * 32
    return max(1, min(most, -(-count // (THREADS * per_thread))))


def aligned(*arrays) -> bool:
    return all(a.data.ptr % 16 == 0 for a in arrays)


def combine_pointers(op_name: str, dtype_name: str, out_ptr: int, a_ptr: int, b_ptr: int,
                     count: int, itemsize: int, stream=None) -> None:
    """out = a (op) b on raw device pointers (b may be a peer's IPC-mapped memory)."""
    import numpy as np
    if count == 0:
        return
    vectorised = int(out_ptr % 16 == 0 and a_ptr % 16 == 0 and b_ptr % 16 == 0)
    function = kernel(f"reduce2<{CUDA_TYPES[dtype_name]}, {FUNCTORS[op_name]}>")
    per = 16 // itemsize if vectorised else 1
    function((_grid(count, per),), (THREADS,),
             (np.uint64(out_ptr), np.uint64(a_ptr), np.uint64(b_ptr), np.int64(count),
              np.int32(vectorised)), stream=stream)


def combine(op_name: str, dtype_name: str, a, b, out=None) -> None:
    """out = a (op) b for CuPy arrays of the same length (out defaults to a)."""
    out = a if out is None else out
    combine_pointers(op_name, dtype_name, out.data.ptr, a.data.ptr, b.data.ptr, a.size,
                     a.dtype.itemsize)


def scale(dtype_name: str, a, factor: float) -> None:
    import numpy as np
    if a.size:
        kernel(f"scale<{CUDA_TYPES[dtype_name]}>")((_grid(a.size, 1),), (THREADS,),
                                                   (a, np.int64(a.size), np.float64(factor)))
