"""DDP communication hooks that compress gradient buckets with ringps's codecs.

    from collectives import torch_hooks as H
    model.register_comm_hook(H.CompressionState(group, "int8"), H.int8_hook)
    model.register_comm_hook(H.CompressionState(group, "topk:0.01+ef"), H.topk_hook)
    model.register_comm_hook(None, H.fp16_hook)                       # like torch's own
    model.register_comm_hook(H.powersgd_state(group), H.powersgd_hook)  # torch's PowerSGD

They use only torch.distributed calls on the state's group, so they work on a ringps or a
gloo group alike and give the same result on both:

    hook          what goes on the wire                        how it is summed
    fp16_hook     the bucket / n in float16 (2 bytes each)     allreduce in float16 (torch's)
    bf16_hook     the bucket / n in bfloat16                   allreduce in bfloat16
    codec hooks   one payload P per rank (compression.py)      all-gather of the payloads; every
    (int8, topk,                                               rank decodes and adds all n in
    onebit, ...)                                               rank order, then divides by n
    powersgd      torch's low-rank factors P, Q                torch's powerSGD_hook

A codec hook keeps its `+ef` residual per bucket index in the state (one state per model),
and starts afresh for a bucket whose size changed (DDP rebuilds its buckets after the first
step). Each rank receives the other n-1 payloads: (n-1)·P bytes, which beats an
uncompressed ring allreduce (2(n-1)/n·S) while P < 2S/n.
"""
import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import (PowerSGDState,
                                                                       powerSGD_hook)

from .compression import Compressor, parse


class CompressionState:
    """The group a hook talks over and its codec (a spec such as "topk:0.01+ef"), with the
    codec's error-feedback residuals."""

    def __init__(self, process_group=None, compression: str | Compressor = "int8"):
        self.process_group = process_group
        self.compressor = parse(compression)

    @property
    def spec(self) -> str:
        return self.compressor.spec


def codec_hook(state: CompressionState, bucket) -> torch.futures.Future[torch.Tensor]:
    """Encode the bucket (with error feedback if the codec has it), all-gather every rank's
    payload, decode and average."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    n = dist.get_world_size(group)
    grad = bucket.buffer()
    values = grad.detach().to(torch.float32).numpy().copy()
    key = bucket.index()
    encoding = state.compressor.begin(values, key)
    mine = encoding.encode(encoding.values)
    state.compressor.end(encoding, key)
    size = len(mine)
    everyone = torch.empty(n * size, dtype=torch.uint8)
    work = dist.all_gather_into_tensor(everyone, torch.from_numpy(mine), group=group,
                                       async_op=True)
    codec, count = state.compressor.codec, grad.numel()

    def decode(future) -> torch.Tensor:
        future.value()                      # raises what the all-gather raised
        gathered = everyone.numpy()
        total = np.zeros(count, np.float32)
        for j in range(n):
            codec.decode_add(gathered[j * size:(j + 1) * size], total)
        grad.copy_(torch.from_numpy(total / n).view_as(grad))
        return grad

    return work.get_future().then(decode)


def _with_codec(name: str):
    def hook(state: CompressionState, bucket) -> torch.futures.Future[torch.Tensor]:
        if state is None or not isinstance(state, CompressionState):
            state = CompressionState(state, name)
        elif state.compressor.codec.name.split(":")[0] != name.split(":")[0]:
            raise ValueError(f"ringps {name}_hook: the state's codec is {state.spec}")
        return codec_hook(state, bucket)
    hook.__name__ = f"{name.split(':')[0]}_hook"
    hook.__doc__ = f"codec_hook with the state's {name.split(':')[0]} codec (a CompressionState, " \
                   f"or a process group or None: then {name} over it)."
    return hook


int8_hook = _with_codec("int8")
onebit_hook = _with_codec("onebit")
topk_hook = _with_codec("topk:0.01+ef")
randomk_hook = _with_codec("randomk:0.01+ef")


def _group_of(state):
    return state.process_group if isinstance(state, CompressionState) else state


def fp16_hook(state, bucket) -> torch.futures.Future[torch.Tensor]:
    """torch's fp16_compress_hook (state: a CompressionState, a process group or None)."""
    return default_hooks.fp16_compress_hook(_group_of(state), bucket)


def bf16_hook(state, bucket) -> torch.futures.Future[torch.Tensor]:
    """torch's bf16_compress_hook (on a ringps group it runs on CPU too)."""
    return default_hooks.bf16_compress_hook(_group_of(state), bucket)


def powersgd_state(process_group=None, rank: int = 1, start_iter: int = 2, **options):
    """torch's PowerSGDState (matrix_approximation_rank=rank, start_powerSGD_iter)."""
    return PowerSGDState(process_group=process_group, matrix_approximation_rank=rank,
                         start_powerSGD_iter=start_iter, **options)


powersgd_hook = powerSGD_hook

HOOKS = {"fp16": fp16_hook, "bf16": bf16_hook, "int8": int8_hook, "onebit": onebit_hook,
         "topk": topk_hook, "randomk": randomk_hook, "powersgd": powersgd_hook}
