"""Command-line parsing and validation for `python -m bench`, done before MPI starts so a
typo costs nothing and ends with one line, not a traceback on every rank."""
from __future__ import annotations

import argparse
import sys

import collectives as C

from .definitions import DEFINITIONS
from .launch import env_rank, under_mpi
from .units import parse_counts, parse_size, size_range

BASELINES = ("mpi", "gloo")
MOST_NODES = 65536          # modelled clusters: beyond this the sweep stops being quick
MOST_NODES_NOT_TREE = 8     # a topology with cycles is priced transfer by transfer


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser, **defaults) -> None:
    p.add_argument("--np", type=int, help="not under mpiexec: start this many local ranks")
    p.add_argument("--out", default="results", help="results folder root (default: results)")
    p.add_argument("--json", action="store_true", help="one JSON object per row on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no table, no progress bar")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(C.DTYPE_NAMES)}")
    p.add_argument("--algo", default="all", help="ringps algorithms, comma-separated, or 'all'")
    p.add_argument("--iters", type=int, default=defaults.get("iters"),
                   help="timed iterations (default: by size, 3..100)")
    p.add_argument("--warmup", type=int, default=defaults.get("warmup", 2))
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="check results against a float64 reference (#wrong column)")
    p.add_argument("--metadata-check", action="store_true",
                   help="time ringps with its cross-rank metadata check on (default off)")
    p.add_argument("--no-gloo", action="store_true", help="skip the torch gloo baseline")
    p.add_argument("--ranks-per-node", type=int, help="pretend nodes of this many ranks")
    p.add_argument("--servers", type=int, help="turn this many ranks into parameter-server "
                   "shards (for --algo ps,hierarchical); the rest are the workers measured")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the buffers live: host memory, or this rank's GPU (CuPy; "
                   "ranks share GPUs when there are more ranks than GPUs)")
    p.add_argument("--kernel-size", type=_size, default=_size("64M"),
                   help="with --device cuda: buffer size for the kernel throughput table")
    p.add_argument("--transport", help="measure every algorithm over each of these transports "
                   "(comma-separated: mpi, shm, auto), as rows named ALGO/TRANSPORT, in one "
                   "run (default: RINGPS_TRANSPORT, else auto: shared memory inside a node)")
    p.add_argument("--shared-buffers", action="store_true",
                   help="also measure every algorithm on buffers from collectives.empty (in the "
                   "rank's shared segment: node peers read them with no copy-in), as ALGO*")
    p.add_argument("--placement", default="dedicated", choices=("dedicated", "per-node"),
                   help="server ranks: the last ones (dedicated) or the last local rank of "
                   "the last nodes (per-node)")


def _standalone(p: argparse.ArgumentParser, default_np: int) -> None:
    """The options of a job that is not a sweep (soak, ps-load)."""
    p.add_argument("--np", type=int, default=None, help="not under mpiexec: start this many "
                   "local ranks (default " + (f"{default_np})" if default_np else
                                              "workers + servers)"))
    p.set_defaults(default_np=default_np)
    p.add_argument("--out", default="results", help="results folder root (default: results)")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="no table, no progress bar")
    p.add_argument("--ranks-per-node", type=int, help="pretend nodes of this many ranks")


def build_parser() -> Parser:
    parser = Parser(prog="python -m bench", description="ringps benchmarks (run under mpiexec)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in DEFINITIONS:
        p = sub.add_parser(name, help=f"{name} sweep over sizes, nccl-tests style")
        p.add_argument("-b", "--minbytes", type=_size, default=_size("1K"))
        p.add_argument("-e", "--maxbytes", type=_size, default=_size("64M"))
        p.add_argument("-f", "--stepfactor", type=int, default=4)
        p.add_argument("--op", default="sum", help=f"one of {', '.join(C.OP_NAMES)}")
        if name == "allreduce":
            p.add_argument("--rings", help="also measure `ring` over this ring layout, in the "
                           "same run, as ring[LAYOUT]: 'bidirectional' or orders with weights, "
                           "e.g. 0-1-2-3:2,0-3-2-1:1 (see collectives/rings.py)")
        _common(p)
    p = sub.add_parser("d2l", help="the d2l Parameter Servers table, measured here")
    p.add_argument("--size", type=_size, default=_size("160MB"))
    _common(p, iters=5, warmup=1)
    p = sub.add_parser("scaling", help="sync time vs rank count (1..N ranks); with --preset, "
                                       "modelled vs node count (no MPI needed)")
    p.add_argument("--size", type=_size, default=_size("16M"))
    p.add_argument("--max-ranks", type=int, help="largest rank count (default: all)")
    p.add_argument("--preset", help="model this topology preset instead of measuring: sync "
                   "time vs node count, every strategy, crossovers (see `python -m topology "
                   "presets`)")
    p.add_argument("--nodes", help="with --preset: node counts, e.g. 1-4096 (powers of two "
                   "and the ends; default) or 1,3,17")
    p.add_argument("--sizes", help="with --preset: several sizes instead of --size, "
                   "comma-separated (1M,100M,1G)")
    p.add_argument("--gpus-per-node", type=int, help="with --preset: GPUs per node where the "
                   "preset lets it vary (ethernet-*, infiniband-*; default 1)")
    p.add_argument("--compression", help="with --preset: also draw each strategy with this "
                   "codec (e.g. topk:0.01, int8; collectives/compression.py)")
    _common(p, iters=10, warmup=1)
    p = sub.add_parser("ddp", help="a DDP training step under ringps (each algorithm) and gloo")
    p.add_argument("--width", type=int, default=4096, help="hidden width (default 4096: ~21M "
                   "parameters with 2 layers)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="samples per rank per step")
    _common(p, iters=5, warmup=2)
    p = sub.add_parser("compression", help="train one model uncompressed and with each codec: "
                       "bytes, sync time and accuracy (bench/COMPRESSION.md)")
    p.add_argument("--codecs", default=None, help="comma-separated codecs (default: "
                   "fp16,bf16,int8,int8+ef,onebit+ef,topk:0.01,topk:0.01+ef,topk:0.1,"
                   "randomk:0.01+ef,randomk:0.1+ef)")
    p.add_argument("--algo", default="ring", help="allreduce algorithm: root, host, blocked or "
                   "ring (default ring)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=64, help="samples per rank per step")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--np", type=int, default=None, help="not under mpiexec: start this many "
                   "local ranks (default 2)")
    p.add_argument("--out", default="results", help="results folder root (default: results)")
    p.add_argument("--json", action="store_true", help="one JSON object per codec on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no table")
    p.add_argument("--ranks-per-node", type=int, help="pretend nodes of this many ranks")
    p = sub.add_parser("soak", help="10,000 mixed collectives (numpy and async torch): RSS per "
                       "rank along the way, flat within 10%% after warm-up (bench/soak.py)")
    p.add_argument("--calls", type=int, default=10_000, help="collectives per rank (default "
                   "10000)")
    p.add_argument("--every", type=int, default=1000, help="record RSS every this many calls")
    p.add_argument("--warmup-calls", type=int, default=1000, help="RSS must stay flat from "
                   "this call on (default 1000)")
    p.add_argument("--tolerance", type=float, default=0.10, help="largest RSS change allowed "
                   "after warm-up, as a fraction (default 0.10)")
    p.add_argument("--no-torch", action="store_true", help="numpy collectives only")
    p.add_argument("--leak-kib", type=int, default=0, help=argparse.SUPPRESS)  # planted leak
    _standalone(p, default_np=2)
    p = sub.add_parser("ps-load", help="workers push and pull against the parameter server "
                       "for a while: lost updates (must be 0), latency, throughput "
                       "(bench/ps_load.py)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the workers push and "
                   "pull (default 60)")
    p.add_argument("--workers", type=int, help="worker ranks (default 8; under mpiexec: the "
                   "ranks that are not servers)")
    p.add_argument("--servers", type=int, default=2, help="server shards (default 2)")
    p.add_argument("--keys", type=int, default=16, help="keys, in four sizes: 256 B, 4 KB, "
                   "64 KB, 1 MB (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the workers' key choices")
    _standalone(p, default_np=None)
    p = sub.add_parser("model", help="predicted sync time on a published or described machine "
                                     "(no MPI needed)")
    p.add_argument("--preset", default="d2l-4gpu-pcie", help="a topology preset (see "
                   "`python -m topology presets`)")
    p.add_argument("--topology", help="a topology file (JSON or TOML) instead of a preset")
    p.add_argument("--nodes", type=int, default=1, help="nodes of the preset (default 1)")
    p.add_argument("--ranks", type=int, help="ranks to model (default: every GPU of the topology)")
    p.add_argument("--size", type=_size, default=_size("160MB"))
    p.add_argument("--algo", default="all", help="algorithms, comma-separated, or 'all'")
    p.add_argument("--rings", help="price `ring` over this ring layout instead of the "
                   "topology's own (see collectives/rings.py; 'rank-order': the plain ring)")
    p.add_argument("--json", action="store_true", help="one JSON object per result on stdout")
    p = sub.add_parser("calibrate", help="fit the `local` topology to a results folder's "
                                         "measurements (no MPI needed)")
    p.add_argument("folder", help="a bench results folder (results/<timestamp>-<name>)")
    p.add_argument("--out", metavar="FILE", help="where to store the fit (default: "
                   "$RINGPS_LOCAL_TOPOLOGY, else ~/.cache/ringps/local.json: what `auto` and "
                   "the local preset read)")
    p.add_argument("--json", action="store_true", help="one JSON object per measured row")
    p = sub.add_parser("suite", help="the main job: allreduce sweep + d2l + scaling + REPORT.md")
    p.add_argument("-b", "--minbytes", type=_size, default=_size("1K"))
    p.add_argument("-e", "--maxbytes", type=_size, default=_size("64M"))
    p.add_argument("-f", "--stepfactor", type=int, default=4)
    p.add_argument("--d2l-size", type=_size, default=_size("160MB"))
    p.add_argument("--scaling-size", type=_size, default=_size("16M"))
    _common(p)
    return parser


def servers_requested(args) -> int:
    import os
    return getattr(args, "servers", None) or int(os.environ.get("RINGPS_SERVERS") or 0)


def algorithms(args, collective: str) -> list[str]:
    registry = C.COLLECTIVES[collective]
    if args.algo == "all":
        return [n for n in registry if servers_requested(args) or n not in C.NEED_SERVERS]
    names = [n for n in args.algo.split(",") if n and n not in BASELINES]
    return names


COMPARING = ("suite", "d2l")     # commands whose point is to compare ranks' strategies
ONE_RANK = ("one rank has nothing to compare: every strategy is a copy, and bandwidths "
            "divide by zero time; start 2 or more (e.g. --np 4, make bench NP=4)")


def validate(args) -> None:
    if args.command in COMPARING and args.np is not None and args.np < 2:
        raise UsageError(f"{args.command} --np {args.np}: {ONE_RANK}")
    if args.command == "compression":
        return validate_compression(args)
    if args.command == "soak":
        return validate_soak(args)
    if args.command == "ps-load":
        return validate_ps_load(args)
    if args.command == "model":
        return validate_model(args)
    if args.command == "scaling" and args.preset is not None:
        return validate_scaling_model(args)
    if args.command == "scaling" and (args.nodes or args.sizes or args.gpus_per_node):
        raise UsageError("--nodes, --sizes and --gpus-per-node model a preset: add --preset "
                         "(without it, scaling measures the live ranks)")
    if args.command == "scaling" and args.compression:
        raise UsageError("--compression models a preset: add --preset")
    if args.command == "calibrate":
        from pathlib import Path
        if not Path(args.folder).is_dir():
            raise UsageError(f"no results folder {args.folder!r}")
        return None
    collective = args.command if args.command in DEFINITIONS else "allreduce"
    registry = C.COLLECTIVES[collective]
    if args.algo != "all":
        unknown = [n for n in args.algo.split(",") if n not in registry and n not in BASELINES]
        if unknown or not args.algo.strip(","):
            raise UsageError(f"unknown {collective} algorithm {','.join(unknown) or args.algo!r} "
                             f"(known: {', '.join(registry)}, all)")
        needy = [n for n in args.algo.split(",") if n in C.NEED_SERVERS]
        if needy and not servers_requested(args):
            raise UsageError(f"{','.join(needy)} run through parameter-server ranks: add "
                             f"--servers S (and start W+S ranks)")
    if getattr(args, "rings", None) and "ring" not in algorithms(args, collective):
        raise UsageError("--rings measures `ring` over a ring layout: add ring to --algo")
    if getattr(args, "device", "cpu") == "cuda":
        validate_device()
    if getattr(args, "transport", None):
        from collectives.transport import CHOICES
        args.transports = [t for t in args.transport.split(",") if t]
        unknown = [t for t in args.transports if t not in CHOICES]
        if unknown or not args.transports:
            named = ",".join(map(repr, unknown)) or repr(args.transport)
            raise UsageError(f"unknown transport {named} (known: {', '.join(CHOICES)})")
    servers = getattr(args, "servers", None)
    if servers is not None and servers < 1:
        raise UsageError(f"--servers must be >= 1, got {servers}")
    if args.dtype not in C.DTYPE_NAMES:
        raise UsageError(f"unsupported dtype {args.dtype!r} (supported: {', '.join(C.DTYPE_NAMES)})")
    if args.dtype == "bfloat16":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UsageError("bfloat16 buffers are torch tensors: pip install ringps[torch]")
    op = getattr(args, "op", "sum")
    if op not in C.OP_NAMES:
        raise UsageError(f"unknown op {op!r} (known: {', '.join(C.OP_NAMES)})")
    if op == "avg" and not args.dtype.startswith(("float", "bfloat")):
        raise UsageError(f"op 'avg' is not defined for integer dtype {args.dtype}")
    if hasattr(args, "minbytes"):
        try:
            size_range(args.minbytes, args.maxbytes, args.stepfactor)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.iters is not None and args.iters < 1:
        raise UsageError(f"--iters must be >= 1, got {args.iters}")


def validate_device() -> None:
    """--device cuda needs CuPy and a device; say so in one line before MPI starts."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError:
        raise UsageError("--device cuda needs CuPy: pip install ringps[cuda12] (or "
                         "ringps[cuda13])") from None
    except Exception as exc:
        raise UsageError(f"--device cuda: no usable CUDA device ({exc})") from None
    if count < 1:
        raise UsageError("--device cuda: no CUDA device on this machine")


def validate_model(args) -> None:
    from topology.model import TopologyError
    from topology.presets import PRESETS
    if args.topology is None and args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r} (known: {', '.join(PRESETS)})")
    if args.nodes < 1:
        raise UsageError(f"--nodes must be >= 1, got {args.nodes}")
    if args.ranks is not None and args.ranks < 1:
        raise UsageError(f"--ranks must be >= 1, got {args.ranks}")
    if args.algo != "all":
        unknown = [n for n in args.algo.split(",") if n not in C.ALGORITHMS]
        if unknown:
            raise UsageError(f"unknown allreduce algorithm {','.join(unknown)!r} "
                             f"(known: {', '.join(C.ALGORITHMS)}, all)")
    try:
        args.topology_object = _load_topology(args)
    except TopologyError as exc:
        raise UsageError(str(exc)) from None


def validate_scaling_model(args) -> None:
    """`scaling --preset`: everything the model needs, read and checked up front."""
    import inspect

    from collectives.dtypes import DTYPES
    from topology.cost import scalable_algorithms
    from topology.model import TopologyError
    from topology.presets import PRESETS, preset
    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r} (known: {', '.join(PRESETS)})")
    if args.max_ranks is not None:
        raise UsageError("--max-ranks counts live ranks; with --preset give --nodes")
    if args.dtype not in DTYPES:
        raise UsageError(f"unsupported dtype {args.dtype!r} (supported: {', '.join(DTYPES)})")
    args.itemsize = DTYPES[args.dtype].itemsize
    try:
        args.node_counts = parse_counts(args.nodes or "1-4096", MOST_NODES)
    except ValueError as exc:
        raise UsageError(f"--nodes: {exc}") from None
    try:
        args.size_list = sorted({parse_size(x) for x in args.sizes.split(",")}) if args.sizes \
            else [args.size]
    except ValueError as exc:
        raise UsageError(f"--sizes: {exc}") from None
    if min(args.size_list) < args.itemsize:
        raise UsageError(f"sizes must be at least one {args.dtype} element ({args.itemsize} "
                         f"bytes), got {min(args.size_list)}")
    varying = [name for name, build in PRESETS.items()
               if "gpus_per_node" in inspect.signature(build).parameters]
    if args.gpus_per_node is not None and args.preset not in varying:
        raise UsageError(f"preset {args.preset!r} has a fixed number of GPUs per node; "
                         f"--gpus-per-node is for {', '.join(varying)}")
    if args.gpus_per_node is not None and args.gpus_per_node < 1:
        raise UsageError(f"--gpus-per-node must be >= 1, got {args.gpus_per_node}")
    try:
        small = preset(args.preset, nodes=min(2, max(args.node_counts)),
                       **({"gpus_per_node": args.gpus_per_node} if args.gpus_per_node else {}))
    except TopologyError as exc:
        raise UsageError(str(exc)) from None
    if small.tree is None and max(args.node_counts) > MOST_NODES_NOT_TREE:
        raise UsageError(f"preset {args.preset!r} has cycles (an NVLink mesh in each node), so "
                         f"it is priced transfer by transfer: at most {MOST_NODES_NOT_TREE} "
                         f"nodes; tree presets (d2l-4gpu-pcie, ethernet-*, infiniband-*) go "
                         f"to {MOST_NODES}")
    names = scalable_algorithms() if args.algo == "all" else \
        [n for n in args.algo.split(",") if n]
    unknown = [n for n in names if n not in C.ALGORITHMS or n == "auto"
               or not hasattr(C.ALGORITHMS[n], "allreduce_pattern")]
    if unknown or not names:
        raise UsageError(f"cannot model {','.join(unknown) or args.algo!r} at scale (those "
                         f"with a compact schedule: {', '.join(scalable_algorithms())}, all)")
    args.algorithms = names
    if args.compression:
        from collectives.compression import parse
        from collectives.errors import InputError
        try:
            parse(args.compression)
        except InputError as exc:
            raise UsageError(f"--compression: {str(exc).removeprefix('ringps: ')}") from None


def _default_np(args) -> None:
    if args.np is None and not under_mpi():
        args.np = args.default_np
    if args.np is not None and args.np < 1:
        raise UsageError(f"--np must be >= 1, got {args.np}")


def validate_soak(args) -> None:
    for name in ("calls", "every", "warmup_calls"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.tolerance < 1:
        raise UsageError(f"--tolerance is a fraction between 0 and 1, got {args.tolerance}")
    _default_np(args)


def validate_ps_load(args) -> None:
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds:g}")
    for name in ("servers", "keys"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if under_mpi():
        return
    workers = 8 if args.workers is None else args.workers
    if args.np is not None and args.np != workers + args.servers:
        raise UsageError(f"--np {args.np} does not match --workers {workers} + --servers "
                         f"{args.servers}: give --workers only")
    args.np = workers + args.servers


def validate_compression(args) -> None:
    from collectives.compression import parse
    from collectives.errors import InputError

    from .compression import ALGORITHMS, DEFAULT_CODECS
    args.codecs = args.codecs or DEFAULT_CODECS
    try:
        for codec in args.codecs.split(","):
            parse(codec)
    except InputError as exc:
        raise UsageError(f"--codecs: {str(exc).removeprefix('ringps: ')}") from None
    if args.algo not in ALGORITHMS:
        raise UsageError(f"--algo: bench compression counts the bytes of {', '.join(ALGORITHMS)}"
                         f"; got {args.algo!r}")
    for name in ("epochs", "batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if args.np is None and not under_mpi():
        args.np = 2


def _load_topology(args):
    from topology.fileformat import load
    from topology.presets import preset
    if args.topology:
        return load(args.topology)
    extra = {"ranks": args.ranks} if args.preset == "local" and args.ranks else {}
    return preset(args.preset, nodes=args.nodes, **extra)


def parse(argv: list[str]):
    try:
        args = build_parser().parse_args(argv)
        validate(args)
        return args
    except UsageError as exc:
        if env_rank() == 0:
            print(f"bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2)
