"""python -m bench <allreduce|reduce_scatter|allgather|broadcast|d2l|scaling|ddp|compression|soak|
ps-load|suite> [options]

Runs under mpiexec/mpirun; started without it, `--np N` starts N local ranks. `model`,
`calibrate` and `scaling --preset` are arithmetic and run without MPI."""
from __future__ import annotations

import sys

from . import cli, launch


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = cli.parse(argv)
    if args.command in ("model", "calibrate"):    # arithmetic only: no MPI, no ranks
        from . import model
        return {"model": model.run, "calibrate": model.calibrate}[args.command](args)
    if args.command == "scaling" and args.preset:  # the model's scaling: no MPI either
        from . import scaling_model
        return scaling_model.run(args)
    if not launch.under_mpi():
        if args.np:
            launch.respawn(args.np, launch.strip_np(argv))
        print(f"bench: error: run under MPI, e.g. `mpiexec -n 4 python -m bench "
              f"{' '.join(argv)}`, or add --np 4 to start local ranks", file=sys.stderr)
        return 2
    if args.command == "ps-load":       # ps.init starts the servers itself (ASP, accumulate)
        return _ps_load(args)
    import collectives as C
    from . import jobs
    # With --servers, the server ranks serve inside init and leave when the workers are done;
    # the workers get their own Communicator and measure on it.
    comm = C.init(ranks_per_node=args.ranks_per_node, servers=getattr(args, "servers", None),
                  placement=getattr(args, "placement", "dedicated"))
    if args.command in cli.COMPARING and comm.size < 2:   # workers (servers left in init)
        if comm.rank == 0:
            print(f"bench: error: {args.command} on {comm.size} rank: {cli.ONE_RANK}",
                  file=sys.stderr)
        return 2
    if args.np and args.np != comm.size and comm.rank == 0:
        print(f"bench: note: --np {args.np} ignored: already running under MPI with "
              f"{comm.size} ranks", file=sys.stderr)
    from collectives.rings import LayoutError
    try:
        if args.command == "compression":
            from . import compression
            compression.run(comm, args)
        elif args.command == "soak":
            from . import soak
            return soak.run(comm, args)
        else:
            jobs.run(comm, args)
    except LayoutError as exc:          # raised on every rank alike (agreed): no abort needed
        if comm.rank == 0:
            print(f"bench: error: --rings: {str(exc).split(': ', 2)[-1]}", file=sys.stderr)
        return 2
    except Exception as exc:            # the peers may be waiting in a collective: end the job
        import traceback
        traceback.print_exc()
        print(f"bench: error on rank {comm.rank}: {type(exc).__name__}: {exc}; aborting the job",
              file=sys.stderr, flush=True)
        comm.abort(1)
    return 0


def _ps_load(args) -> int:
    from . import ps_load
    try:
        return ps_load.main(args)
    except Exception as exc:            # servers and other workers may be waiting: end the job
        import traceback

        from mpi4py import MPI
        traceback.print_exc()
        print(f"bench: error on rank {MPI.COMM_WORLD.rank}: {type(exc).__name__}: {exc}; "
              f"aborting the job", file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
