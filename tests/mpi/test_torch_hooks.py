"""DDP communication hooks (collectives/torch_hooks.py): one step of a one-parameter model
against a reference written here from the codec's definition (the average over ranks of what
each rank's gradient decodes to), error feedback carried to the next step, and whole DDP
runs on a ringps group matching the same hook on gloo."""
import numpy as np
import pytest
from torch_groups import dist, groups, torch  # noqa: F401  (groups: the fixture)
from torch.nn.parallel import DistributedDataParallel as DDP

from bench.compression import load_example
from collectives import torch_hooks as H
from collectives.compression import parse


def batch(rank: int, step: int):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(8, 600, generator=g), torch.randn(8, 1, generator=g)


def local_grad(weight: torch.Tensor, rank: int, step: int) -> np.ndarray:
    """d/dw of rank's MSE loss, computed without DDP: what that rank's bucket holds."""
    w = weight.detach().clone().requires_grad_(True)
    x, y = batch(rank, step)
    torch.nn.functional.mse_loss(x @ w.T, y).backward()
    return w.grad.reshape(-1).numpy().astype(np.float64)


@pytest.mark.parametrize("backend", ["ringps", "gloo"])
@pytest.mark.parametrize("spec", ["int8", "topk:0.05+ef", "onebit+ef", "randomk:0.1"])
def test_codec_hook_averages_what_each_rank_decodes_to(groups, backend, spec):
    n, r = dist.get_world_size(), dist.get_rank()
    group = groups[backend]
    torch.manual_seed(0)
    model = torch.nn.Linear(600, 1, bias=False)          # one bucket: the weight's gradient
    ddp = DDP(model, process_group=group)
    ddp.register_comm_hook(H.CompressionState(group, spec), H.codec_hook)
    references = [parse(spec) for _ in range(n)]         # each rank's codec, replayed here
    for step in range(3):
        weight = model.weight.detach().clone()
        ddp.zero_grad()
        x, y = batch(r, step)
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        total = np.zeros(600)
        for j in range(n):
            values = local_grad(weight, j, step).astype(np.float32)
            encoding = references[j].begin(values, 0)
            payload = encoding.encode(encoding.values)
            references[j].end(encoding, 0)
            total += references[j].codec.decode(payload, 600)
        np.testing.assert_allclose(model.weight.grad.reshape(-1).numpy(), total / n,
                                   rtol=1e-5, atol=1e-6, err_msg=f"{spec} step {step}")
        with torch.no_grad():
            model.weight -= 0.1 * model.weight.grad


def test_fp16_hook_is_torchs(groups):
    n, r = dist.get_world_size(), dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(600, 1, bias=False)
    ddp = DDP(model, process_group=groups["ringps"])
    ddp.register_comm_hook(groups["ringps"], H.fp16_hook)
    weight = model.weight.detach().clone()
    x, y = batch(r, 0)
    torch.nn.functional.mse_loss(ddp(x), y).backward()
    halves = [torch.from_numpy(local_grad(weight, j, 0)).to(torch.float16) / n for j in range(n)]
    stacked = torch.stack([h.double() for h in halves])
    expected, magnitude = stacked.sum(0).numpy(), stacked.abs().sum(0).numpy()
    got = model.weight.grad.reshape(-1).double().numpy()
    bound = n * 2.0 ** -11 * magnitude + 1e-12        # one float16 rounding per partial sum
    assert (np.abs(got - expected) <= bound).all(), np.abs(got - expected).max()


@pytest.mark.parametrize("hook", ["int8", "topk", "fp16", "powersgd"])
def test_ddp_with_a_hook_trains_the_same_on_ringps_and_gloo(groups, hook):
    example = load_example()
    x, y = example.dataset(samples=512)
    results = []
    for backend in ("ringps", "gloo"):
        group = groups[backend]
        ddp = DDP(example.model(), process_group=group)
        state = {"int8": H.CompressionState(group, "int8"),
                 "topk": H.CompressionState(group, "topk:0.05+ef"),
                 "fp16": group, "powersgd": H.powersgd_state(group, rank=2, start_iter=2)}[hook]
        ddp.register_comm_hook(state, H.HOOKS[hook])
        accuracy = example.train(ddp, x, y, epochs=1, batch=64, lr=0.02, log=lambda *_: None)
        results.append((accuracy, {k: v.clone() for k, v in ddp.module.state_dict().items()}))
    (acc_ours, ours), (acc_gloo, gloo) = results
    for name in gloo:
        assert torch.allclose(ours[name], gloo[name], rtol=1e-4, atol=1e-5), (hook, name)
    assert abs(acc_ours - acc_gloo) < 1e-3
