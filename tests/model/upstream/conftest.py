"""Upstream megatron's MIMO unit tests, ported to CPU: what `Utils.initialize_model_parallel(1, 1)`
gives them (a one-rank world with megatron's parallel_state), on gloo.

Overrides tests/model's `one_rank_world`, which forbids parallel_state: upstream's tests build
GPTModel and CLIPViTModel without process groups, so they read it. megatron 0.16.1's CLIPViTModel
calls `.cuda()` on a buffer in `__init__`; on a CPU-only torch that call keeps the tensor where it is.
"""

import pytest
import torch
from megatron.core import parallel_state

from mimo_runtime.groups import one_rank_world as world


@pytest.fixture(scope="module", autouse=True)
def one_rank_world():
    torch.set_num_threads(1)
    with world():
        parallel_state.initialize_model_parallel(1, 1)
        cuda = torch.Tensor.cuda
        if not torch.cuda.is_available():
            torch.Tensor.cuda = lambda self, *args, **kwargs: self
        try:
            yield
        finally:
            torch.Tensor.cuda = cuda
            parallel_state.destroy_model_parallel()
