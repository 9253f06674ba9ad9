"""Published machines as topologies, each with its source.

Bandwidths are bytes/s per direction (GB = 1e9), latencies seconds. Builders take the
node count (and GPUs per node where it varies) so the same preset scales from one box to a
cluster; `preset(name, nodes=...)` is the entry point.
"""
from __future__ import annotations

from .model import Link, Topology, TopologyError

GB = 1e9
PCIE3_X16 = 16 * GB      # d2l's figure for a PCIe 3.0 x16 link
NVLINK2 = 18 * GB        # d2l: V100 NVLink, 18 GB/s per link per direction


def _box(name: str, node: int, gpus: int, endpoints: dict, links: list, ranks: list, hosts: dict):
    """One node's host memory; returns the GPU endpoint names."""
    cpu = f"n{node}.cpu"
    endpoints[cpu] = {"kind": "cpu", "node": node}
    hosts[node] = cpu
    names = [f"n{node}.gpu{g}" for g in range(gpus)]
    for gpu in names:
        endpoints[gpu] = {"kind": "gpu", "node": node}
    ranks += names
    return cpu, names


def d2l_4gpu_pcie(nodes: int = 1) -> Topology:
    """d2l.ai, "Parameter Servers" (ch. 13.7): 4 GPUs and the CPU on one PCIe 3.0 x16 switch,
    16 GB/s per link; GPU0 60 ms, CPU 80 ms, split 15 ms for 160 MB."""
    endpoints, links, ranks, hosts, switches = {}, [], [], {}, []
    for node in range(nodes):
        cpu, gpus = _box("d2l", node, 4, endpoints, links, ranks, hosts)
        switch = f"n{node}.pcie"
        switches.append(switch)
        links += [Link(end, switch, PCIE3_X16, 1e-6, "pcie") for end in gpus + [cpu]]
    _network(nodes, hosts, switches, links, 12.5 * GB, 5e-6, "ethernet")
    return Topology("d2l-4gpu-pcie", endpoints, switches, links, ranks, hosts,
                    source="d2l.ai Dive into Deep Learning, Parameter Servers: 4 GPUs, PCIe 3.0 x16")


# d2l's DGX-1 (0-indexed): ring A 0-1-2-3-4-5-6-7-0 over double NVLinks, ring B
# 0-3-5-2-4-7-1-6-0 over single ones: 6 NVLinks per V100.
DGX1_RING_A = [0, 1, 2, 3, 4, 5, 6, 7]
DGX1_RING_B = [0, 3, 5, 2, 4, 7, 1, 6]


def dgx1_v100(nodes: int = 1) -> Topology:
    """8x V100 in the DGX-1 hybrid cube mesh as d2l describes it: one ring of double NVLinks
    (36 GB/s) and one of single NVLinks (18 GB/s); GPUs reach the CPU over PCIe 3.0 x16."""
    endpoints, links, ranks, hosts, switches = {}, [], [], {}, []
    for node in range(nodes):
        cpu, gpus = _box("dgx1", node, 8, endpoints, links, ranks, hosts)
        switch = f"n{node}.pcie"
        switches.append(switch)
        links += [Link(end, switch, PCIE3_X16, 1e-6, "pcie") for end in gpus + [cpu]]
        for ring, width in ((DGX1_RING_A, 2), (DGX1_RING_B, 1)):
            links += [Link(gpus[a], gpus[b], width * NVLINK2, 1e-6, "nvlink")
                      for a, b in zip(ring, ring[1:] + ring[:1])]
    _network(nodes, hosts, switches, links, 12.5 * GB, 5e-6, "ethernet")
    return Topology("dgx1-v100", endpoints, switches, links, ranks, hosts,
                    source="d2l.ai Parameter Servers (ring sync on DGX-1); NVIDIA DGX-1 whitepaper")


def _nvswitch_box(name: str, per_gpu: float, source: str):
    def build(nodes: int = 1, network: float = 50 * GB, latency: float = 2e-6,
              kind: str = "infiniband") -> Topology:
        endpoints, links, ranks, hosts, switches = {}, [], [], {}, []
        for node in range(nodes):
            cpu, gpus = _box(name, node, 8, endpoints, links, ranks, hosts)
            nvswitch, pcie = f"n{node}.nvswitch", f"n{node}.pcie"
            switches += [nvswitch, pcie]
            links += [Link(g, nvswitch, per_gpu, 1e-6, "nvswitch") for g in gpus]
            links += [Link(end, pcie, 32 * GB, 1e-6, "pcie") for end in gpus + [cpu]]
        _network(nodes, hosts, switches, links, network, latency, kind)
        return Topology(name, endpoints, switches, links, ranks, hosts, source=source)
    return build


dgx_a100 = _nvswitch_box("dgx-a100", 300 * GB, "NVIDIA DGX A100: NVLink 3, 600 GB/s per GPU "
                         "(300 each way) through NVSwitch; 8x 200 Gb/s HDR InfiniBand")
dgx_h100 = _nvswitch_box("dgx-h100", 450 * GB, "NVIDIA DGX H100: NVLink 4, 900 GB/s per GPU "
                         "(450 each way) through NVSwitch; 8x 400 Gb/s NDR InfiniBand")


def _network(nodes, hosts, switches, links, bandwidth, latency, kind) -> None:
    """Each node's PCIe switch reaches one non-blocking network switch through its NIC."""
    if nodes < 2:
        return
    switches.append("network")
    pcie = [s for s in switches if s.endswith(".pcie")]
    links += [Link(s, "network", bandwidth, latency, kind) for s in pcie]


def _cluster(name: str, gbit: float, latency: float, kind: str):
    def build(nodes: int = 2, gpus_per_node: int = 1) -> Topology:
        """Nodes of `gpus_per_node` GPUs on PCIe 3.0 x16, one NIC each, one switch."""
        endpoints, links, ranks, hosts, switches = {}, [], [], {}, []
        for node in range(nodes):
            cpu, gpus = _box(name, node, gpus_per_node, endpoints, links, ranks, hosts)
            switch = f"n{node}.pcie"
            switches.append(switch)
            links += [Link(end, switch, PCIE3_X16, 1e-6, "pcie") for end in gpus + [cpu]]
        _network(nodes, hosts, switches, links, gbit / 8 * GB, latency, kind)
        return Topology(name, endpoints, switches, links, ranks, hosts,
                        source=f"{gbit:g} Gb/s {kind} ({latency * 1e6:g} us), non-blocking switch")
    return build


def local(nodes: int = 1, ranks: int = 4) -> Topology:
    """This machine as bench measured it (`python -m bench calibrate`, or `make bench`):
    ranks around one memory switch with the fitted alpha, beta and gamma; an uncalibrated
    guess until then."""
    if nodes != 1:
        raise TopologyError("the local preset describes this one machine (nodes=1)")
    from .calibrate import load_parameters, local_topology
    p = load_parameters()
    topology = local_topology(ranks, p["alpha"], p["beta"], p["gamma"])
    if not p["calibrated"]:
        topology.source = f"this machine, NOT calibrated yet (run `make bench`): {topology.source}"
    return topology


PRESETS = {
    "local": local,
    "d2l-4gpu-pcie": d2l_4gpu_pcie,
    "dgx1-v100": dgx1_v100,
    "dgx-a100": dgx_a100,
    "dgx-h100": dgx_h100,
    "ethernet-10g": _cluster("ethernet-10g", 10, 10e-6, "ethernet"),
    "ethernet-25g": _cluster("ethernet-25g", 25, 8e-6, "ethernet"),
    "ethernet-100g": _cluster("ethernet-100g", 100, 5e-6, "ethernet"),
    "ethernet-400g": _cluster("ethernet-400g", 400, 4e-6, "ethernet"),
    "infiniband-hdr": _cluster("infiniband-hdr", 200, 1.5e-6, "infiniband"),
    "infiniband-ndr": _cluster("infiniband-ndr", 400, 1.2e-6, "infiniband"),
}


def preset(name: str, **settings) -> Topology:
    if name not in PRESETS:
        raise TopologyError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    nodes = settings.get("nodes", 1)
    if not isinstance(nodes, int) or nodes < 1:
        raise TopologyError(f"nodes must be a whole number >= 1, got {nodes!r}")
    return PRESETS[name](**settings)
