"""The whole model of a topology on the `meta` device: every parameter's name and shape, no memory.

`mimo-run check` and `mimo-run params` build the colocated single-process model (every module,
every layer, no TP/PP split: the canonical names and full shapes) with tensors that have shapes
but no storage, so a model of any size is checked in seconds, before any rank starts. megatron
builds its process-group collections from torch.distributed, so the one-rank world of
groups/world.py is started here when none is (the commands wrap their work in `one_rank_world()`).
"""

import torch

from mimo_runtime.topology import Topology


def build_on_meta(topology: Topology, seed: int = 0):
    """(model, plan): the colocated 1-rank model of `topology` on `meta`, frozen parts frozen, uninitialized."""
    from mimo_runtime.groups import build_module_groups, ensure_one_rank_world
    from mimo_runtime.model.factory import build_model
    from mimo_runtime.plan import colocated_plan

    ensure_one_rank_world()
    plan = colocated_plan(topology, 1)
    groups = build_module_groups(plan, topology.train.timeout_s)
    # the same path a CUDA run takes (build_model's `device`): a tensor created on CPU where a device is
    # given would show up here as a non-meta parameter or buffer (tests/gpu/test_meta_build.py)
    model = build_model(plan, groups, 0, seed, initialize=False, device=torch.device("meta"))
    return model, plan
