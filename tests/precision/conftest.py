"""Single-process tests in a 1-rank gloo world, with parallel_state and CUDA forbidden."""

import pytest
import torch
import torch.distributed as dist

from tests.model.fakes import no_parallel_state_or_cuda


@pytest.fixture(scope="module", autouse=True)
def one_rank_world():
    torch.set_num_threads(1)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    with no_parallel_state_or_cuda():
        yield
    if started:
        dist.destroy_process_group()
