"""Small rank functions for launcher tests (picklable: module-level)."""

import os


def allreduce_and_where(rank: int, world_size: int):
    """Join the collective and report where this rank ran and what environment it saw."""
    import ray
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return {"sum": t.item(), "node_id": ray.get_runtime_context().get_node_id(),
            "env": {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                   "MASTER_PORT", "GLOO_SOCKET_IFNAME")}}
