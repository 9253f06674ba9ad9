"""Torch's ProcessGroup call forms, turned into the one form the ringps group runs.

torch's own groups (gloo) accept every method without its options argument
(`group.allreduce([t])`), and the short overloads of the C++ binding: one tensor instead of
a list, a ReduceOp instead of options, a root rank, a timeout:

    method           short form                                 as run
    allreduce        (tensor | tensors, op=SUM, timeout=None)   (tensors, AllreduceOptions)
    reduce           (tensor | tensors, root, op=SUM, timeout)  (tensors, ReduceOptions)
    broadcast        (tensor | tensors, root, timeout)          (tensors, BroadcastOptions)
    allgather        (outputs, input_tensor, timeout)           ([outputs], [input], opts)
    gather           (outputs, input_tensor, root, timeout)     ([outputs], [input], opts)
    scatter          (output_tensor, inputs, root, timeout)     ([output], [inputs], opts)
    reduce_scatter   (output_tensor, inputs, op=SUM, timeout)   ([output], [inputs], opts)
    barrier          (timeout)                                  (BarrierOptions)
    any other        options left out                           default options

`canonical(name, args, kwargs)` returns the positional arguments of the right-hand form;
it returns them unchanged when they are already in it, so every layer may call it.
"""
from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch._C import _distributed_c10d as c10d

SUM = dist.ReduceOp.SUM

# method -> (options class, names of its positional arguments before the options)
SIGNATURES = {
    "allreduce": (c10d.AllreduceOptions, ("tensors",)),
    "allreduce_coalesced": (c10d.AllreduceCoalescedOptions, ("tensors",)),
    "reduce": (c10d.ReduceOptions, ("tensors",)),
    "broadcast": (c10d.BroadcastOptions, ("tensors",)),
    "allgather": (c10d.AllgatherOptions, ("output_tensors", "input_tensors")),
    "allgather_coalesced": (c10d.AllgatherOptions, ("output_lists", "input_list")),
    "all_gather_single": (c10d.AllgatherOptions, ("output", "input")),
    "all_gather_single_coalesced": (c10d.AllgatherOptions, ("outputs", "inputs")),
    "gather": (c10d.GatherOptions, ("output_tensors", "input_tensors")),
    "scatter": (c10d.ScatterOptions, ("output_tensors", "input_tensors")),
    "reduce_scatter": (c10d.ReduceScatterOptions, ("output_tensors", "input_tensors")),
    "reduce_scatter_single": (c10d.ReduceScatterOptions, ("output", "input")),
    "reduce_scatter_single_coalesced": (c10d.ReduceScatterOptions, ("outputs", "inputs")),
    "all_to_all_single": (c10d.AllToAllOptions, ("output", "input", "output_split_sizes",
                                                 "input_split_sizes")),
    "alltoall": (c10d.AllToAllOptions, ("output_tensors", "input_tensors")),
    "barrier": (c10d.BarrierOptions, ()),
}
# short forms: what follows the tensors, in order
EXTRAS = {"allreduce": ("op", "timeout"), "reduce": ("root", "op", "timeout"),
          "broadcast": ("root", "timeout"), "allgather": ("timeout",),
          "gather": ("root", "timeout"), "scatter": ("root", "timeout"),
          "reduce_scatter": ("op", "timeout"), "barrier": ("timeout",)}
# short forms where one tensor stands for a list of one: (argument index, nesting)
ONE_TENSOR = {"allreduce": 0, "reduce": 0, "broadcast": 0, "allgather": 1, "gather": 1,
              "scatter": 0, "reduce_scatter": 0}


def canonical(name: str, args: tuple, kwargs: dict) -> tuple:
    """(positional arguments of the long form) for a call `name(*args, **kwargs)`."""
    if name not in SIGNATURES:
        return tuple(args) + tuple(kwargs.values())
    options_class, names = SIGNATURES[name]
    given = list(args)
    for key in names[len(given):]:
        if key in kwargs:
            given.append(kwargs.pop(key))
    head, rest = given[:len(names)], given[len(names):]
    if len(head) < len(names):
        raise TypeError(f"ringps {name}: missing argument(s) "
                        f"{', '.join(names[len(head):])}")
    opts = rest[0] if rest and isinstance(rest[0], options_class) else kwargs.pop("opts", None)
    if isinstance(opts, options_class):
        if kwargs or len(rest) > 1:
            raise TypeError(f"ringps {name}: unexpected arguments after the options")
        return (*head, opts)
    short = dict(zip(EXTRAS.get(name, ()), rest))
    if len(rest) > len(short):
        raise TypeError(f"ringps {name}: too many arguments ({len(args)} positional)")
    for key in list(kwargs):
        if key not in EXTRAS.get(name, ()):
            raise TypeError(f"ringps {name}: unexpected keyword argument {key!r}")
        short[key] = kwargs.pop(key)
    opts = options_class()
    if "op" in EXTRAS.get(name, ()):
        opts.reduceOp = _reduce_op(short.get("op", SUM))
    if "root" in short:
        opts.rootRank = int(short["root"])
    timeout = short.get("timeout")
    if isinstance(timeout, timedelta):
        opts.timeout = timeout
    if name in ONE_TENSOR and isinstance(head[ONE_TENSOR[name]], torch.Tensor):
        head = _as_lists(name, head)
    return (*head, opts)


def _reduce_op(op):
    return op if isinstance(op, dist.ReduceOp) else dist.ReduceOp(op)


def _as_lists(name: str, head: list) -> list:
    """The short forms with one tensor, as lists of one."""
    if name in ("allreduce", "reduce", "broadcast"):
        return [[head[0]]]
    if name in ("allgather", "gather"):
        return [[list(head[0])], [head[1]]]
    return [[head[0]], [list(head[1])]]          # scatter, reduce_scatter
