"""Suite-wide: a test module that leaves a process group up which it did not find has it ended
here. Each model build adds about 20 gloo groups (3 threads each) to the world; left up, they
piled up over the suite (2000+ threads in the pytest process) and slowed every later test."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def end_the_world_a_module_leaves():
    import torch.distributed as dist

    before = dist.is_initialized()
    yield
    if not before and dist.is_initialized():
        dist.destroy_process_group()
