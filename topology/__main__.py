"""python -m topology show [--json]      this job's layout (runs under mpiexec or alone)
python -m topology presets [--json]     the published machines ringps can model"""
from __future__ import annotations

import argparse
import json
import sys

from .presets import PRESETS, preset


def show(args) -> int:
    import collectives as C
    from .discover import discover
    comm = C.init()
    info = discover(comm)
    if comm.rank != 0:
        return 0
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{info['ranks']} ranks on {len(info['nodes'])} host(s); {info['mpi_library']}")
    for node in info["nodes"]:
        print(f"  {node['host']}: ranks {node['ranks']}")
    print(f"cores {info['cores']}; NUMA nodes: "
          + (", ".join(f"{n['node']} (cpus {n['cpus']})" for n in info["numa"]) or "none reported"))
    gpus = info["gpus"]
    print(f"GPUs per host: {gpus['count']}" + ("" if gpus["count"] else " (CPU-only)"))
    for name in gpus["names"]:
        print(f"  {name}")
    if gpus["topo"]:
        print(gpus["topo"].rstrip())
    return 0


def presets(args) -> int:
    rows = []
    for name in PRESETS:
        t = preset(name)
        rows.append({"preset": name, "ranks": len(t.ranks), "nodes": t.nodes, "source": t.source})
    for row in rows:
        print(json.dumps(row) if args.json else f"{row['preset']:16} {row['ranks']:3} ranks  "
              f"{row['source']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m topology")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("show", "presets"):
        sub.add_parser(name).add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    return {"show": show, "presets": presets}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
