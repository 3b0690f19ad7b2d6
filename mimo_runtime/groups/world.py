"""The one-rank world of model work inside this process: `mimo-run check`, `params` and `export-hf`
build the whole model on one rank, and `hf.from_pretrained` returns one for a notebook.

megatron builds its process-group collections from torch.distributed, so these need a world; the
one started here is gloo over an in-memory store (no sockets, no port). Every model build adds its
groups to that world (about 20 gloo groups, 3 threads each, for a two-module model), so a command
destroys the world it started when it ends (`one_rank_world`): a process that runs many of them (a
notebook, the tests) does not pile up threads.
"""

from contextlib import contextmanager

import torch.distributed as dist


def ensure_one_rank_world() -> bool:
    """Start the one-rank world unless one exists (which must then have one rank); True when started here."""
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise RuntimeError(f"a one-process model needs a one-rank world; this process group has "
                               f"{dist.get_world_size()} ranks (use a topology with model: {{hf: DIR}} instead)")
        return False
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return True


@contextmanager
def one_rank_world():
    """`ensure_one_rank_world()` for the length of a command: a world started here, with every group
    built in it, is destroyed on exit (the threads go with the last model that refers to them)."""
    started = ensure_one_rank_world()
    try:
        yield
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
