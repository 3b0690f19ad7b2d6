"""Every in-process model test runs in a 1-rank gloo world (megatron layers pass groups through
only when torch.distributed is up) with parallel_state and CUDA forbidden."""

import pytest
import torch

from mimo_runtime.groups import one_rank_world as world
from tests.model.fakes import no_parallel_state_or_cuda


@pytest.fixture(scope="module", autouse=True)
def one_rank_world():
    torch.set_num_threads(1)
    with world(), no_parallel_state_or_cuda():
        yield
