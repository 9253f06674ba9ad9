"""Published machines as topologies, each with its source.

Bandwidths are bytes/s per direction (GB = 1e9), latencies seconds. `overhead` is LogGP's
per-message cost at an endpoint (o + g: posting a send, taking a message), the order of
magnitude published LogGP measurements report (Hoefler, Lichei, Rehm, IPDPS 2007; Culler et
al., LogP, 1993): about 1 us through an RDMA or NVLink/PCIe peer path, a few us through a
kernel TCP stack. Builders take the
node count (and GPUs per node where it varies) so the same preset scales from one box to a
cluster; `preset(name, nodes=...)` is the entry point.
"""
from __future__ import annotations

from .model import Link, Topology, TopologyError

GB = 1e9
PCIE3_X16 = 16 * GB      # d2l's figure for a PCIe 3.0 x16 link
NVLINK2 = 18 * GB        # d2l: V100 NVLink, 18 GB/s per link per direction
OVERHEAD_PEER = 1e-6     # per message through PCIe / NVLink / RDMA (verbs)
OVERHEAD_TCP = 3e-6      # per message through a kernel TCP stack (Ethernet)


class _Parts:
    """What a preset is assembled from: nodes of host memory and GPUs behind a PCIe switch,
    optional extra links, and one network switch joining the nodes."""

    def __init__(self):
        self.endpoints, self.links, self.ranks, self.hosts, self.switches = {}, [], [], {}, []

    def node(self, node: int, gpus: int, pcie: float = PCIE3_X16) -> list[str]:
        cpu, pcie_switch = f"n{node}.cpu", f"n{node}.pcie"
        names = [f"n{node}.gpu{g}" for g in range(gpus)]
        self.endpoints[cpu] = {"kind": "cpu", "node": node}
        self.endpoints.update({g: {"kind": "gpu", "node": node} for g in names})
        self.hosts[node] = cpu
        self.ranks += names
        self.switches.append(pcie_switch)
        self.links += [Link(end, pcie_switch, pcie, 1e-6, "pcie") for end in names + [cpu]]
        return names

    def network(self, bandwidth: float, latency: float, kind: str) -> None:
        """Each node's PCIe switch reaches one non-blocking network switch through its NIC."""
        pcie = [s for s in self.switches if s.endswith(".pcie")]
        if len(pcie) > 1:
            self.switches.append("network")
            self.links += [Link(s, "network", bandwidth, latency, kind) for s in pcie]

    def topology(self, name: str, source: str, overhead: float = OVERHEAD_PEER) -> Topology:
        return Topology(name, self.endpoints, self.switches, self.links, self.ranks, self.hosts,
                        source=source, overhead=overhead)


def d2l_4gpu_pcie(nodes: int = 1) -> Topology:
    """d2l.ai, "Parameter Servers" (ch. 13.7): 4 GPUs and the CPU on one PCIe 3.0 x16 switch,
    16 GB/s per link; GPU0 60 ms, CPU 80 ms, split 15 ms for 160 MB."""
    parts = _Parts()
    for node in range(nodes):
        parts.node(node, 4)
    parts.network(12.5 * GB, 5e-6, "ethernet")
    return parts.topology("d2l-4gpu-pcie", "d2l.ai Dive into Deep Learning, Parameter Servers: "
                                           "4 GPUs, PCIe 3.0 x16")


# d2l's DGX-1 (0-indexed): ring A 0-1-2-3-4-5-6-7-0 over double NVLinks, ring B
# 0-3-5-2-4-7-1-6-0 over single ones: 6 NVLinks per V100.
DGX1_RING_A = [0, 1, 2, 3, 4, 5, 6, 7]
DGX1_RING_B = [0, 3, 5, 2, 4, 7, 1, 6]


def dgx1_v100(nodes: int = 1) -> Topology:
    """8x V100 in the DGX-1 hybrid cube mesh as d2l describes it: one ring of double NVLinks
    (36 GB/s) and one of single NVLinks (18 GB/s); GPUs reach the CPU over PCIe 3.0 x16.
    One box declares both rings as its ring layout, which `ring` is priced on (NCCL too
    lays its channels over every ring the NVLinks form)."""
    parts = _Parts()
    for node in range(nodes):
        gpus = parts.node(node, 8)
        for ring, width in ((DGX1_RING_A, 2), (DGX1_RING_B, 1)):
            parts.links += [Link(gpus[a], gpus[b], width * NVLINK2, 1e-6, "nvlink")
                            for a, b in zip(ring, ring[1:] + ring[:1])]
    parts.network(12.5 * GB, 5e-6, "ethernet")
    topology = parts.topology("dgx1-v100", "d2l.ai Parameter Servers (ring sync on DGX-1); "
                                           "NVIDIA DGX-1 whitepaper")
    if nodes == 1:        # the two rings at once, the buffer split 2:1 by their bandwidth
        topology.rings = ",".join(f"{'-'.join(map(str, ring))}:{width}" for ring, width in
                                  ((DGX1_RING_A, 2), (DGX1_RING_B, 1)))
    return topology


def _nvswitch_box(name: str, per_gpu: float, source: str):
    def build(nodes: int = 1, network: float = 50 * GB, latency: float = 2e-6,
              kind: str = "infiniband") -> Topology:
        parts = _Parts()
        for node in range(nodes):
            gpus = parts.node(node, 8, pcie=32 * GB)
            nvswitch = f"n{node}.nvswitch"
            parts.switches.append(nvswitch)
            parts.links += [Link(g, nvswitch, per_gpu, 1e-6, "nvswitch") for g in gpus]
        parts.network(network, latency, kind)
        return parts.topology(name, source)
    return build


dgx_a100 = _nvswitch_box("dgx-a100", 300 * GB, "NVIDIA DGX A100: NVLink 3, 600 GB/s per GPU "
                         "(300 each way) through NVSwitch; 8x 200 Gb/s HDR InfiniBand")
dgx_h100 = _nvswitch_box("dgx-h100", 450 * GB, "NVIDIA DGX H100: NVLink 4, 900 GB/s per GPU "
                         "(450 each way) through NVSwitch; 8x 400 Gb/s NDR InfiniBand")


def _cluster(name: str, gbit: float, latency: float, kind: str):
    def build(nodes: int = 2, gpus_per_node: int = 1) -> Topology:
        """Nodes of `gpus_per_node` GPUs on PCIe 3.0 x16, one NIC each, one switch."""
        parts = _Parts()
        for node in range(nodes):
            parts.node(node, gpus_per_node)
        parts.network(gbit / 8 * GB, latency, kind)
        overhead = OVERHEAD_TCP if kind == "ethernet" else OVERHEAD_PEER
        return parts.topology(name, f"{gbit:g} Gb/s {kind} ({latency * 1e6:g} us, "
                                    f"{overhead * 1e6:g} us per message), non-blocking switch",
                              overhead)
    return build


def local(nodes: int = 1, ranks: int = 4) -> Topology:
    """This machine as bench measured it (`python -m bench calibrate`, or `make bench`):
    ranks around one memory switch with the fitted alpha, beta, gamma and overhead, sharing
    the cores the calibration was measured on; an uncalibrated guess (on this machine's
    cores) until then."""
    if nodes != 1:
        raise TopologyError("the local preset describes this one machine (nodes=1)")
    from .calibrate import load_parameters, local_topology
    p = load_parameters()
    topology = local_topology(ranks, p["alpha"], p["beta"], p["gamma"], p["overhead"],
                              p["cores"], p["core_share"])
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
