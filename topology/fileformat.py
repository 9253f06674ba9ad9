"""Topologies in files: JSON or TOML (tomllib, no new dependency), the same fields either way.

    name = "my-box"
    source = "where the numbers come from"
    gamma = 0.0                      # seconds per byte reduced (optional)
    overhead = 1e-6                  # seconds per message at an endpoint (optional, LogGP o)
    ranks = ["gpu0", "gpu1"]         # rank r lives on ranks[r]
    switches = ["pcie"]
    endpoints = { gpu0 = { kind = "gpu", node = 0 }, gpu1 = { kind = "gpu", node = 0 }, cpu0 = { kind = "cpu", node = 0 } }
    hosts = { "0" = "cpu0" }         # host memory of each node (for `host`)
    rings = "0-1:1"                  # optional: the ring layout `ring` runs on (see
                                     # collectives/rings.py), e.g. "0-1-2-3:2,0-2-1-3:1"
    links = [
      { a = "gpu0", b = "pcie", bandwidth = 16e9, latency = 1e-6, kind = "pcie" },
      { a = "gpu1", b = "pcie", bandwidth = 16e9, latency = 1e-6, kind = "pcie" },
      { a = "cpu0", b = "pcie", bandwidth = 16e9, latency = 1e-6, kind = "pcie" },
    ]

Bandwidth is bytes/s per direction, latency seconds. A link naming an unknown endpoint, or
two ranks with no path between them, is refused with an error naming it.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict
from pathlib import Path

from .model import Link, Topology, TopologyError

REQUIRED = ("name", "endpoints", "links", "ranks")


def from_dict(data: dict, origin: str = "topology") -> Topology:
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise TopologyError(f"{origin}: missing {', '.join(missing)}")
    try:
        links = [Link(**link) for link in data["links"]]
    except TypeError as exc:
        raise TopologyError(f"{origin}: bad link ({exc}); a link has a, b, bandwidth, "
                            f"and optionally latency and kind") from None
    topology = Topology(data["name"], dict(data["endpoints"]), list(data.get("switches", [])),
                        links, list(data["ranks"]),
                        {int(k): v for k, v in data.get("hosts", {}).items()},
                        float(data.get("gamma", 0.0)), data.get("source", origin),
                        str(data.get("rings") or ""), float(data.get("overhead", 0.0)))
    for rank in range(1, len(topology.ranks)):                 # every rank reaches rank 0
        topology.route(topology.ranks[rank], topology.ranks[0])
    return topology


def to_dict(topology: Topology) -> dict:
    return {"name": topology.name, "source": topology.source, "gamma": topology.gamma,
            "ranks": topology.ranks, "switches": topology.switches,
            "endpoints": topology.endpoints,
            "hosts": {str(k): v for k, v in topology.hosts.items()},
            "links": [asdict(link) for link in topology.links], "rings": topology.rings,
            "overhead": topology.overhead}


def load(path: str | Path) -> Topology:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise TopologyError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: "
                            f"{exc}") from None
    return from_dict(data, str(path))


def save(topology: Topology, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(topology), indent=2) + "\n")
