"""The groups the torch-facing tests compare: a ringps group of every rank (ring, so that
no test pays for `auto`'s first choice) and a gloo group of the same ranks (torch's own CPU
backend, the reference for torch's semantics)."""
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import collectives.torch_backend  # noqa: E402,F401  registers "ringps"

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="module")
def groups(comm):
    dist.init_process_group("ringps")
    yield {"ringps": dist.new_group(backend="ringps", pg_options={"algorithm": "ring"}),
           "gloo": dist.new_group(backend="gloo")}
    dist.destroy_process_group()
