"""The ringps torch backend's collectives, checked in one script that runs the same under
mpiexec and under torchrun (no MPI world: bytes go over gloo from torch's store)."""
import torch
import torch.distributed as dist

import collectives.torch_backend  # noqa: F401

dist.init_process_group("ringps")
r, n = dist.get_rank(), dist.get_world_size()
t = torch.full((5,), float(r + 1))
dist.all_reduce(t)
assert torch.equal(t, torch.full((5,), n * (n + 1) / 2)), t
out = torch.empty(2 * n)
dist.all_gather_into_tensor(out, torch.full((2,), float(r)))
assert out.tolist() == [float(p) for p in range(n) for _ in range(2)], out
small = torch.empty(2)
dist.reduce_scatter_tensor(small, torch.arange(2.0 * n))
assert torch.equal(small, (torch.arange(2.0 * n) * n)[2 * r:2 * r + 2]), small
t = torch.full((3,), float(r))
dist.broadcast(t, src=n - 1)
assert torch.equal(t, torch.full((3,), float(n - 1)))
out = torch.empty(n)
dist.all_to_all_single(out, torch.arange(float(n)) + 10 * r)
assert out.tolist() == [10.0 * p + r for p in range(n)], out
got = torch.empty(2)
if n > 1:
    recv = dist.irecv(got, src=(r - 1) % n, tag=4)
    dist.isend(torch.full((2,), float(r)), dst=(r + 1) % n, tag=4).wait()
    recv.wait()
    assert torch.equal(got, torch.full((2,), float((r - 1) % n)))
sub = dist.new_group(list(range(n)), backend="ringps", pg_options={"algorithm": "blocked"})
t = torch.ones(4)
dist.all_reduce(t, group=sub)
assert torch.equal(t, torch.full((4,), float(n)))
dist.barrier()
world = dist.group.WORLD
print(f"rank {r}: torch collectives ok on {type(world.comm).__name__} over "
      f"{type(world.comm.transport).__name__}", flush=True)
dist.destroy_process_group()
