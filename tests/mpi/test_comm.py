"""Communicator: node groups (real and pretend), leaders, roles, and algorithms on sub-groups."""
import numpy as np
import pytest

import collectives as C
from collectives.comm import Communicator, assign_servers


def test_world_is_one_node_here(comm):
    assert comm.num_nodes == 1 and comm.local_size == comm.size
    assert comm.node is comm
    assert (comm.leaders is not None) == (comm.rank == 0)


@pytest.mark.parametrize("per_node", [1, 2, 3])
def test_pretend_nodes(comm, per_node):
    c = Communicator(ranks_per_node=per_node)
    n = comm.size
    assert c.node_of_rank == [r // per_node for r in range(n)]
    assert c.num_nodes == -(-n // per_node)
    assert c.local_rank == comm.rank % per_node
    assert c.node.size == min(per_node, n - (comm.rank // per_node) * per_node)
    if c.local_rank == 0:
        assert c.leaders.size == c.num_nodes and c.leaders.rank == comm.rank // per_node
    else:
        assert c.leaders is None
    # algorithms run unchanged on the sub-communicators
    x = np.full(11, comm.rank, np.int64)
    C.allreduce(x, algorithm="ring", comm=c.node)
    local = [r for r in range(n) if r // per_node == comm.rank // per_node]
    assert (x == sum(local)).all()
    if c.leaders is not None:
        y = np.full(5, comm.rank, np.int64)
        C.allreduce(y, algorithm="blocked", comm=c.leaders)
        assert (y == sum(range(0, n, per_node))).all()


def test_roles_dedicated_servers(comm):
    if comm.size < 2:
        pytest.skip("needs a worker and a server")
    c = Communicator(servers=1)
    assert c.server_ranks == [comm.size - 1]
    assert c.role == ("server" if comm.rank == comm.size - 1 else "worker")
    if c.role == "worker":
        assert c.workers.size == comm.size - 1
        x = np.ones(3)
        C.allreduce(x, comm=c.workers)
        assert (x == comm.size - 1).all()
    else:
        assert c.workers is None


def test_server_placement_rules():
    nodes = [0, 0, 1, 1, 2, 2]
    assert assign_servers(nodes, 2, "dedicated") == [4, 5]
    assert assign_servers(nodes, 3, "per-node") == [1, 3, 5]
    with pytest.raises(ValueError, match="at least one worker"):
        assign_servers(nodes, 6, "dedicated")
    with pytest.raises(ValueError, match="one server per node"):
        assign_servers(nodes, 4, "per-node")
    with pytest.raises(ValueError, match="unknown server placement"):
        assign_servers(nodes, 1, "random")


def test_environment_settings(comm, monkeypatch):
    monkeypatch.setenv("RINGPS_RANKS_PER_NODE", "1")
    c = Communicator()
    assert c.num_nodes == comm.size and c.leaders is c


def test_ring_layout_is_agreed_or_refused_on_every_rank(comm, monkeypatch):
    from collectives.rings import LayoutError
    n = comm.size
    if n == 1:
        assert Communicator(rings="bidirectional").rings.orders == ((0,), (0,))
        return
    if n == 2:        # reversed, 0->1->0 is the same ring: the pair would race
        with pytest.raises(LayoutError, match="ranks 0, 1: rings 1 and 2 both send"):
            Communicator(rings="bidirectional")
        return
    monkeypatch.setenv("RINGPS_RINGS", "bidirectional")
    assert Communicator().rings.orders[1] == tuple(reversed(range(n)))
    assert Communicator(rings="rank-order").rings is None          # the argument wins
    mine = "bidirectional" if comm.rank else "rank-order"           # rank 0 disagrees
    with pytest.raises(LayoutError, match="ranks disagree on the ring layout .rank 0: 0-1"):
        Communicator(rings=mine)
    broken = "0-1" if comm.rank == n - 1 else "bidirectional"        # one rank's is unreadable
    with pytest.raises(LayoutError, match=f"rank {n - 1}: ring 1 .0-1. must name each"):
        Communicator(rings=broken)


def test_ring_layout_numbers_the_workers_and_stops_servers_too(comm):
    """With servers the layout is the workers'; a bad one raises on every rank, the server
    ranks included (they would otherwise wait for workers that never come)."""
    from collectives.rings import LayoutError
    n = comm.size
    if n < 2:
        pytest.skip("needs a worker and a server")
    world_order = "-".join(map(str, range(n)))            # numbers n ranks; there are n-1 workers
    with pytest.raises(LayoutError, match=f"ring 1 .{world_order}. must name each of the {n - 1}"):
        Communicator(servers=1, rings=world_order)
    if n >= 4:
        c = Communicator(servers=1, rings="bidirectional")
        assert c.rings is None
        if c.role == "worker":
            assert c.workers.rings.orders[1] == tuple(reversed(range(n - 1)))


def test_weights_that_differ_in_the_last_digits_are_a_disagreement(comm):
    from collectives.rings import LayoutError
    n = comm.size
    if n < 3:
        pytest.skip("two rings need 3+ ranks")
    weight = "1.000004" if comm.rank == 0 else "1"
    text = f"{'-'.join(map(str, range(n)))}:{weight},{'-'.join(map(str, reversed(range(n))))}"
    with pytest.raises(LayoutError, match="ranks disagree on the ring layout .rank 0: [0-9-]*:1.000004"):
        Communicator(rings=text)


def test_close_gives_back_the_mpi_communicators_and_refuses_later_calls(comm):
    from mpi4py import MPI
    c = Communicator(ranks_per_node=1, servers=1 if comm.size > 1 else 0)
    subs = [s for s in (c.node, c.leaders, c.workers) if s is not None and s is not c]
    x = np.full(5, comm.rank + 1.0)
    if c.workers is not None:
        C.allreduce(x, comm=c.workers)
    c.close()
    c.close()                                   # twice is fine
    assert c.mpi == MPI.COMM_NULL and all(s.mpi == MPI.COMM_NULL for s in subs)
    for call in (lambda: C.allreduce(x, comm=c), lambda: C.broadcast(x, comm=c, check=False),
                 c.barrier):
        with pytest.raises(RuntimeError, match=f"rank {comm.rank}: this communicator was "
                                               f"closed"):
            call()
    with Communicator(transport="mpi") as d:
        C.allreduce(x, comm=d)
    assert d.mpi == MPI.COMM_NULL


@pytest.mark.skipif(__import__("os").environ.get("RINGPS_TRANSPORT") == "shm",
                    reason="once per rank count (the MPI suite): it makes 1100 communicators")
def test_more_communicators_than_mpi_has_when_each_is_closed(comm):
    """MPICH has 2048 communicators a process and each Communicator takes two or more:
    without close() the 1100 below would fail near the 700th ('Too many communicators')."""
    if comm.size > 2:
        pytest.skip("slow on more ranks than cores; 1 and 2 ranks show it")
    x = np.ones(3)
    for i in range(1100):
        with Communicator(transport="mpi") as c:
            if i % 100 == 0:
                C.allreduce(x, comm=c, check=False)
    assert x[0] == comm.size ** 11


def test_ranks_waiting_long_in_a_barrier_sleep(comm):
    """Rank 0 arrives 0.5 s late; the others' wait backs off to sleeps (transport
    base.pause), so it costs them well under 0.15 s of CPU. Yielding alone, as before,
    spent about the whole wait on a free core (bench's idle ranks slowed the measured)."""
    import time
    comm.barrier()
    if comm.rank == 0:
        time.sleep(0.5)
    start = time.thread_time()
    comm.barrier()
    used = time.thread_time() - start
    if comm.rank != 0:
        assert used < 0.15, f"rank {comm.rank} spent {used:.2f} s of CPU waiting 0.5 s"
