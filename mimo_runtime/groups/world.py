"""The one-rank world of model work inside this process: `mimo-run check`, `params` and `export-hf`
build the whole model on one rank, and `hf.from_pretrained` returns one for a notebook.

megatron builds its process-group collections from torch.distributed, so these need a world; the
one started here is gloo over an in-memory store (no sockets, no port). Every model build adds its
groups to that world (about 20 gloo groups, 3 threads each, for a two-module model), so a command
destroys the world it started when it ends (`one_rank_world`), and a model that outlives its call
(`from_pretrained`) takes its groups with it when it is collected (`release_with`): a process that
builds many (a notebook, the tests) does not pile up threads.
"""

import weakref
from contextlib import contextmanager
from typing import Dict

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


def release_with(model, groups: Dict) -> None:
    """Destroy `groups`' process groups (build_module_groups' result, this rank's) once `model` is
    garbage-collected; the world itself stays."""
    finalizer = weakref.finalize(model, _destroy, [g for mg in groups.values() for g in mg.mine])
    finalizer.atexit = False  # at exit the world goes anyway


def _destroy(pgs) -> None:
    if not dist.is_initialized():
        return  # the world was destroyed, and these groups with it
    for pg in pgs:
        try:
            dist.destroy_process_group(pg)
        except (ValueError, RuntimeError):
            pass  # already destroyed, or from a world since replaced
