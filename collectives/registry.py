"""Algorithms by name, per collective, imported on first use.

A registry maps a name to a module path; the module has a function named after the
collective (`allreduce(x, ctx)`, `broadcast(x, ctx, root)`, ...) and its schedule
(`allreduce_schedule(n, count, itemsize, root)`). Loading by module name keeps
`import collectives` light and lets higher layers (ps/, topology/) add strategies
(`ps`, `hierarchical`, `auto`) without the core importing them.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType


CHANGES = [0]       # registrations and removals so far, in any registry (caches compare it)


class Registry(Mapping):
    def __init__(self, collective: str, entries: dict[str, str]):
        self.collective = collective
        self._paths = dict(entries)
        self._modules: dict[str, ModuleType] = {}

    def register(self, name: str, module_path: str) -> None:
        self._paths[name] = module_path
        self._modules.pop(name, None)
        CHANGES[0] += 1

    def unregister(self, name: str) -> None:
        self._paths.pop(name)
        self._modules.pop(name, None)
        CHANGES[0] += 1

    def __getitem__(self, name: str) -> ModuleType:
        module = self._modules.get(name)
        if module is None:
            module = self._modules[name] = importlib.import_module(self._paths[name])
        return module

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def function(self, name: str):
        return getattr(self[name], self.collective)

    def schedule(self, name: str, n: int, count: int, itemsize: int, root: int = 0):
        return getattr(self[name], f"{self.collective}_schedule")(n, count, itemsize, root)


ALGORITHMS = Registry("allreduce", {
    "root": "collectives.root",
    "host": "collectives.host",
    "blocked": "collectives.blocked",
    "ring": "collectives.ring",
    "rhd": "collectives.rhd",               # recursive halving/doubling (Rabenseifner)
    "oneshot": "collectives.oneshot",       # every rank reduces every peer's whole buffer
    "ps": "ps.allreduce",                   # through the sharded parameter server (ps/)
    "hierarchical": "ps.hierarchical",      # in-node reduce-scatter, PS across nodes
    "auto": "topology.auto",                # the cost model's pick (topology/auto.py)
})

# Strategies that run only in a job with parameter-server ranks (servers=S): the others run
# on any communicator.
NEED_SERVERS = ("ps", "hierarchical")


def flat_algorithms() -> list[str]:
    """The allreduce algorithms that need no server ranks."""
    return [name for name in ALGORITHMS if name not in NEED_SERVERS]

COLLECTIVES: dict[str, Registry] = {
    "allreduce": ALGORITHMS,
    "reduce_scatter": Registry("reduce_scatter", {"ring": "collectives.ring",
                                                  "direct": "collectives.blocked"}),
    "allgather": Registry("allgather", {"ring": "collectives.ring",
                                        "direct": "collectives.blocked"}),
    "broadcast": Registry("broadcast", {"ring": "collectives.ring", "direct": "collectives.root"}),
    "reduce": Registry("reduce", {"ring": "collectives.ring", "direct": "collectives.root"}),
}
