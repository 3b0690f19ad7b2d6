"""The whole model of a topology on the `meta` device: every parameter's name and shape, no memory.

`mimo-run check` and `mimo-run params` build the colocated single-process model (every module,
every layer, no TP/PP split: the canonical names and full shapes) with tensors that have shapes
but no storage, so a model of any size is checked in seconds, before any rank starts. megatron
builds its process-group collections from torch.distributed, so a one-process gloo world (an
in-memory store, no sockets) is started here when none is.
"""

import torch
import torch.distributed as dist

from mimo_runtime.topology import Topology


def build_on_meta(topology: Topology, seed: int = 0):
    """(model, plan): the colocated 1-rank model of `topology` on `meta`, frozen parts frozen, uninitialized."""
    from mimo_runtime.groups import build_module_groups
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import colocated_plan

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    plan = colocated_plan(topology, 1)
    groups = build_module_groups(plan, topology.train.timeout_s)
    # the same path a CUDA run takes (build_model's `device`): a tensor created on CPU where a device is
    # given would show up here as a non-meta parameter or buffer (tests/gpu/test_meta_build.py)
    model = build_model(plan, groups, 0, seed, initialize=False, device=torch.device("meta"))
    return model, plan
