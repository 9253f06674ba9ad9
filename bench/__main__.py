"""python -m bench <allreduce|reduce_scatter|allgather|broadcast|d2l|scaling|suite> [options]

Runs under mpiexec/mpirun; started without it, `--np N` starts N local ranks."""
from __future__ import annotations

import sys

from . import cli, launch


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = cli.parse(argv)
    if args.command in ("model", "calibrate"):    # arithmetic only: no MPI, no ranks
        from . import model
        return {"model": model.run, "calibrate": model.calibrate}[args.command](args)
    if not launch.under_mpi():
        if args.np:
            launch.respawn(args.np, launch.strip_np(argv))
        print(f"bench: error: run under MPI, e.g. `mpiexec -n 4 python -m bench "
              f"{' '.join(argv)}`, or add --np 4 to start local ranks", file=sys.stderr)
        return 2
    import collectives as C
    from . import jobs
    comm = C.init(ranks_per_node=args.ranks_per_node)
    jobs.run(comm, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
