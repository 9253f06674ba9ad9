"""The benchmark jobs behind `python -m bench`: a sweep per collective, the d2l table, the
scaling sweep, and the suite that runs all three into one results folder with a report.
Each job returns a section (rows, tables, images) so the suite can assemble them."""
from __future__ import annotations

import sys

import numpy as np

from . import d2l, environment, membw, plots, report, results, tables
from .baselines import GlooBaseline, MPIBaseline, Unavailable
from .cli import algorithms
from .definitions import DEFINITIONS
from .scaling import run_scaling
from .sweep import run_sweep
from .units import format_size, size_range


class Output:
    """What rank 0 shows and writes; the other ranks only compute."""

    def __init__(self, comm, args, name: str):
        self.comm, self.args = comm, args
        self.root = comm.rank == 0
        self.name, self._folder = name, None
        self.notes: set[str] = set()
        self._probe = None

    def probe(self) -> dict:
        """The memory-bandwidth probe (bench/membw.py), measured once per run by every rank."""
        if self._probe is None:
            self._probe = membw.probe(self.comm)
        return self._probe

    @property
    def folder(self):
        """results/<timestamp>-<name>/ on rank 0, made when first written to: a run that
        stops before writing anything leaves no empty folder behind."""
        if self.root and self._folder is None:
            self._folder = results.new_folder(self.args.out, self.name)
        return self._folder

    @property
    def talking(self) -> bool:
        return self.root and not self.args.quiet and not self.args.json

    def say(self, text: str) -> None:
        if self.talking:
            print(text, flush=True)

    def rows(self, rows: list[dict], title: str) -> None:
        if self.root and self.args.json:
            for row in rows:
                print(results.json_line(row), flush=True)
        elif self.talking:
            print(tables.header(title))
            for row in rows:
                print(tables.line(row))
            print(flush=True)

    def table(self, rows: list[dict], title: str, headers: list[str], body: list[list]) -> None:
        """A plain-text table (or, with --json, the rows behind it)."""
        if self.root and self.args.json:
            for row in rows:
                print(results.json_line(row), flush=True)
        self.say(f"# {title}\n{tables.text_table(headers, body)}\n")

    def progress(self, total: int, what: str):
        if not self.talking:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, desc=what, file=sys.stderr, leave=False, dynamic_ncols=True)

    def plot(self, function, *a) -> list[str]:
        if not self.root:
            return []
        if not plots.available():
            self.notes.add("plots skipped: matplotlib is not installed (pip install ringps[plot])")
            return []
        return [str(function(*a))]


def _baselines(comm, args, out: Output) -> list:
    if getattr(args, "device", "cpu") == "cuda":
        from collectives.transport.cuda_ipc import cuda_aware
        if cuda_aware():
            return [MPIBaseline(comm)]
        out.notes.add("mpi baseline skipped on device buffers: the MPI library is not "
                      "CUDA-aware; the device ceilings below are the yardstick")
        return []
    chosen = [MPIBaseline(comm)]
    if not args.no_gloo:
        try:
            chosen.append(GlooBaseline(comm))
        except Unavailable as why:
            out.notes.add(f"gloo baseline skipped: {why}")
    return chosen


def _title(comm, what: str) -> str:
    return f"ringps {what}: {comm.size} ranks on {comm.num_nodes} node(s)"


def _ring_layouts(comm, args, names: list[str]) -> dict:
    """{"ring[LAYOUT]": ("ring", a communicator with that layout)} for allreduce --rings, so
    the plain ring and the layout are measured side by side in one run."""
    text = getattr(args, "rings", None)
    if not text or "ring" not in names:
        return {}
    from collectives.comm import Communicator
    layout_comm = Communicator(comm.mpi, timeout=comm.timeout, servers=0, rings=text,
                               transport=comm.transport_choice, _node_of_rank=comm.node_of_rank)
    return {f"ring[{text}]": ("ring", layout_comm)}


def _transports(comm, args, names: list[str]) -> dict:
    """{"ALGO/TRANSPORT": (ALGO, a communicator over that transport)} for --transport, so
    the same algorithms over MPI and over shared memory are measured side by side."""
    from collectives.comm import Communicator
    chosen = {}
    for transport in getattr(args, "transports", None) or []:
        other = Communicator(comm.mpi, timeout=comm.timeout, servers=0, transport=transport,
                             rings=comm.rings or "rank-order", _node_of_rank=comm.node_of_rank)
        chosen.update({f"{name}/{transport}": (name, other) for name in names})
    if getattr(args, "shared_buffers", False):
        chosen.update({f"{label}*": (*how, "shared") for label, how in
                       (chosen or {name: (name, comm) for name in names}).items()
                       if how[0] != "auto"})
    return chosen


def sweep_section(comm, args, out: Output, collective: str) -> dict:
    definition = DEFINITIONS[collective]
    sizes = size_range(args.minbytes, args.maxbytes, args.stepfactor)
    names = algorithms(args, collective)
    baselines = _baselines(comm, args, out)
    layouts = {**_ring_layouts(comm, args, names), **_transports(comm, args, names)}
    if getattr(args, "transports", None):
        names = []                      # measured once per transport instead
    bar = out.progress(len(sizes) * (len(names) + len(baselines) + len(layouts)), collective)
    rows = run_sweep(comm, definition, sizes, dtype=args.dtype, op=getattr(args, "op", "sum"),
                     algorithms=names, baselines=baselines, others=layouts, iters=args.iters,
                     warmup=args.warmup, check=args.check, metadata_check=args.metadata_check,
                     progress=bar, notes=out.notes)
    if bar is not None:
        bar.close()
    if getattr(args, "device", "cpu") == "cpu":
        membw.roofline(rows, out.probe(), comm)
    title = _title(comm, f"{collective} {args.dtype} {rows[0]['op'] or ''}".rstrip())
    if getattr(args, "device", "cpu") == "cuda":
        title += " (device buffers)"
    out.rows(rows, title)
    images = out.plot(plots.busbw_vs_size, rows, out.folder / f"{collective}_busbw.png", title) \
        if out.root else []
    return {"title": f"{collective} sweep", "rows": rows, "images": images, "name": collective,
            "text": f"`{' '.join(sys.argv[1:]) or collective}`: busbw per algorithm; "
                    f"`ratio` is busbw over MPI's own {collective} at the same size."}


def d2l_section(comm, args, out: Output, size: int) -> dict:
    baselines = _baselines(comm, args, out)
    names = algorithms(args, "allreduce")
    bar = out.progress(len(names) + len(baselines), "d2l")
    rows = run_sweep(comm, DEFINITIONS["allreduce"], [size], dtype=args.dtype, op="sum",
                     algorithms=names, baselines=baselines, iters=args.iters or 5,
                     warmup=min(args.warmup, 1), check=args.check,
                     metadata_check=args.metadata_check, progress=bar, notes=out.notes)
    if bar is not None:
        bar.close()
    headers, body, bars = d2l.table(rows)
    title = (f"d2l 'Parameter Servers' table: {format_size(size)} {args.dtype} gradient, "
             f"{comm.size} ranks on {comm.num_nodes} node(s)")
    out.table(rows, title, headers, body)
    images = out.plot(plots.d2l_bars, bars, out.folder / "d2l.png", title) if out.root else []
    return {"title": "d2l table", "rows": rows, "table": (headers, body), "images": images,
            "name": "d2l", "text": title + ". d2l's figures are for the hardware named; "
            "compare the ratios, not the milliseconds."}


def scaling_section(comm, args, out: Output, size: int) -> dict:
    max_ranks = min(args.max_ranks or comm.size, comm.size) if hasattr(args, "max_ranks") \
        else comm.size
    names = algorithms(args, "allreduce")
    bar = out.progress(max_ranks * (len(names) + 1 + (not args.no_gloo)), "scaling")
    rows = run_scaling(comm, size, max_ranks, dtype=args.dtype, algorithms=names,
                       iters=args.iters or 10, warmup=min(args.warmup, 1),
                       use_gloo=not args.no_gloo, progress=bar, notes=out.notes)
    if bar is not None:
        bar.close()
    # rank 0 is in every subset, so its rows are complete; the other ranks' are not used
    title = f"sync time vs ranks: {format_size(size)} {args.dtype} allreduce, 1..{max_ranks} ranks"
    body = [[r["ranks"], tables.label(r), f"{r['time_us'] / 1e3:.2f}", f"{r['busbw']:.3f}",
             r["wrong"]] for r in rows]
    headers = ["ranks", "algo", "time_ms", "busbw", "#wrong"]
    out.table(rows, title, headers, body)
    images = out.plot(plots.time_vs_ranks, rows, out.folder / "scaling.png", title) \
        if out.root else []
    return {"title": "sync time vs ranks", "rows": rows, "table": (headers, body),
            "images": images, "name": "scaling", "text": title + "."}


def ddp_section(comm, args, out: Output) -> dict:
    from .ddp import run_ddp
    names = algorithms(args, "allreduce")
    bar = out.progress(len(names) + 2, "ddp")
    rows = run_ddp(comm, names, width=args.width, layers=args.layers, batch=args.batch,
                   steps=args.iters or 5, warmup=args.warmup, progress=bar)
    if bar is not None:
        bar.close()
    headers = ["algo", "step_ms", "x gloo (speed)", "params"]
    body = [[r["algo"], f"{r['step_ms']:.1f}", f"{r['ratio_to_gloo']:.2f}", r["params"]]
            for r in rows]
    title = (f"DDP step, {rows[0]['params'] / 1e6:.1f}M parameters, batch {args.batch}/rank, "
             f"{comm.size} ranks: ringps (each algorithm) vs gloo; `none` moves no byte (a DDP "
             f"hook that communicates nothing): the floor no backend can beat")
    out.table(rows, title, headers, body)
    return {"title": "DDP step", "rows": rows, "table": (headers, body), "images": [],
            "name": "ddp", "text": title + "."}


def _calibration(out: Output, rows: list[dict]) -> dict:
    """Fit the local model to everything the suite measured (rank 0 only: arithmetic)."""
    from topology.model import TopologyError
    from .model import calibration_section
    try:
        section = calibration_section(rows, out.folder, say=out.say)
    except TopologyError as exc:
        out.notes.add(f"calibration skipped: {exc}")
        return {"title": "calibration", "text": str(exc), "rows": [], "name": "calibration"}
    section["rows"] = section.pop("points")
    return section


def _agreement(out: Output, rows: list[dict], fit) -> dict:
    """The fitted model's `auto` picks against the measured best, cell by cell."""
    from . import agreement
    found = agreement.section(rows, fit.parameters())
    out.say(f"# {found['title']}: {found['text']}\n{tables.text_table(*found['table'])}\n")
    return found


def save(comm, out: Output, sections: list[dict], env: dict, probe: dict) -> None:
    if not out.root:
        return
    for section in sections:
        rows = section["rows"]
        if rows:
            fields = None if set(rows[0]) <= set(results.FIELDS) else list(rows[0])
            results.write_csv(out.folder / f"{section['name']}.csv", rows, fields)
    results.write_json(out.folder / "results.json", {
        "environment": env, "memory_bandwidth": probe, "notes": sorted(out.notes),
        "sections": {s["name"]: s["rows"] for s in sections}})
    for note in sorted(out.notes):
        out.say(f"# note: {note}")
    out.say(f"# memory bandwidth (all ranks): copy {probe['copy_GBps_all_ranks']} GB/s, "
            f"add {probe['add_GBps_all_ranks']} GB/s")
    out.say(f"# results: {out.folder}")


def gpu_section(comm, args, out: Output, sweeps: list[dict]) -> dict:
    """--device cuda: the copy and torch add_ ceilings, each kernel's throughput, and each
    algorithm's fraction of the copy ceiling (bench/gpu.py)."""
    from . import gpu
    ceiling = gpu.ceilings()
    kernels = gpu.kernel_rows(args.kernel_size, ceiling["copy_GBps"]) if out.root else []
    ids = np.empty(comm.size, dtype=np.int64)          # buffers, not pickled objects
    comm.mpi.Allgather(np.array([_device_id()], dtype=np.int64), ids)
    gpus = len(set(ids.tolist()))
    fractions = []
    for section in sweeps:
        for row in section["rows"]:
            if row["collective"] == "allreduce":
                f = gpu.algorithm_fraction(row["algo"], row["ranks"], gpus, row["bytes"],
                                           row["time_us"] * 1e-6, ceiling["copy_GBps"])
                row["copy_fraction"] = f
                if f is not None:
                    fractions.append([row["algo"], format_size(row["bytes"]), f"{f:.2f}"])
    torch_add = ceiling.get("torch_add_GBps")
    text = (f"{ceiling['device']}: copy {ceiling['copy_GBps']:.0f} GB/s, torch add_ "
            f"{'%.0f GB/s' % torch_add if torch_add else 'n/a'} (bytes through memory per s); "
            f"{comm.size} ranks on {gpus} GPU(s)")
    out.say(f"# device ceilings: {text}")
    out.table(kernels, f"kernels at {format_size(args.kernel_size)}",
              ["kernel", "GB/s", "of copy"],
              [[k["kernel"], f"{k['GBps']:.0f}", f"{k['fraction_of_copy']:.2f}"]
               for k in kernels])
    out.table([], "allreduce: fraction of the copy ceiling", ["algo", "size", "of copy"],
              fractions)
    return {"title": "GPU ceilings", "rows": kernels, "images": [], "name": "gpu",
            "text": text}


def _device_id() -> int:
    import cupy
    return cupy.cuda.Device().id


def _use_device(comm, args) -> None:
    """--device cuda: buffers on this rank's GPU (local rank mod GPUs: ranks share GPUs when
    there are more ranks than GPUs)."""
    from .definitions import DEVICE
    DEVICE["kind"] = getattr(args, "device", "cpu")
    if DEVICE["kind"] != "cuda":
        return
    import cupy
    device = comm.local_rank % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    try:
        import torch
        torch.cuda.set_device(device)
    except Exception:
        pass


def run(comm, args) -> None:
    _use_device(comm, args)
    out = Output(comm, args, args.command)
    if args.command in DEFINITIONS:
        sections = [sweep_section(comm, args, out, args.command)]
    elif args.command == "d2l":
        sections = [d2l_section(comm, args, out, args.size)]
    elif args.command == "scaling":
        sections = [scaling_section(comm, args, out, args.size)]
    elif args.command == "ddp":
        sections = [ddp_section(comm, args, out)]
    else:
        sections = [sweep_section(comm, args, out, "allreduce"),
                    sweep_section(comm, args, out, "broadcast"),      # no reductions: lets
                    d2l_section(comm, args, out, args.d2l_size),      # calibration find gamma
                    scaling_section(comm, args, out, args.scaling_size)]
    if getattr(args, "device", "cpu") == "cuda":
        sections.append(gpu_section(comm, args, out, [s for s in sections if s.get("rows")]))
    env = environment.describe(comm)
    probe = out.probe()
    if args.command == "suite" and out.root:
        measured = [row for s in sections for row in s["rows"]]
        sections.append(_calibration(out, measured))
        if sections[-1].get("fit"):
            sections.append(_agreement(out, measured, sections[-1].pop("fit")))
    save(comm, out, sections, env, probe)
    if args.command == "suite" and out.root:
        path = report.write(out.folder, env, probe, sections)
        out.say(f"# report: {path}")
