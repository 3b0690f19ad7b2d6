"""Plan -> per-module process groups (HyperCommGrid + ProcessGroupCollection).

torch.distributed requires every rank to create every group, in the same order: we walk the
modules in plan order and the same dimension list for each, whatever this rank holds.
"""

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, List, Optional

import torch.distributed as dist
from megatron.core.hyper_comm_grid import HyperCommGrid
from megatron.core.process_groups_config import ProcessGroupCollection

from mimo_runtime.plan import DIM_NAMES, ModulePlan, Plan

# (ProcessGroupCollection field, grid dims); creation order is part of the contract.
GROUP_DIMS = (
    ("tp", ["tp"]),
    ("cp", ["cp"]),
    ("dp", ["dp"]),
    ("pp", ["pp"]),
    ("dp_cp", ["cp", "dp"]),
    ("tp_cp", ["tp", "cp"]),
    ("mp", ["tp", "pp"]),
    ("tp_dp_cp", ["tp", "cp", "dp"]),
)


@dataclass
class ModuleGroups:
    """One module's grid and groups. `pgs` is None on ranks outside the module; `mine` lists every
    group made for it that this rank is in (what `groups.world.release_with` destroys)."""

    plan: ModulePlan
    grid: HyperCommGrid
    pgs: Optional[ProcessGroupCollection]
    mine: List[dist.ProcessGroup] = field(default_factory=list)


def embedding_rank_lists(m: ModulePlan) -> List[List[int]]:
    """First and last pipeline stage ranks that share (tp, cp, dp): tied embeddings are synced over them."""
    if m.pp == 1:
        return [[r] for r in m.stage_ranks(0)]
    first, last = m.stage_ranks(0), m.stage_ranks(m.pp - 1)
    return [[a, b] for a, b in zip(first, last)]


def build_module_groups(plan: Plan, timeout_s: float) -> Dict[str, ModuleGroups]:
    """Create every module's groups on every rank; returns this rank's view."""
    rank = dist.get_rank()
    os.environ.setdefault("WORLD_SIZE", str(dist.get_world_size()))
    timeout = timedelta(seconds=timeout_s)
    out: Dict[str, ModuleGroups] = {}
    for name, m in plan.modules.items():
        grid = HyperCommGrid(list(m.shape), list(DIM_NAMES), rank_offset=m.rank_offset, backend="gloo"
                             if dist.get_backend() == "gloo" else None)
        made = [grid.create_pg(dims, timeout=timeout) for _, dims in GROUP_DIMS]
        embd = _new_groups(embedding_rank_lists(m), rank, timeout)
        pos_embd = _new_groups([[r] for r in m.stage_ranks(0)], rank, timeout)
        pgs = None
        if m.holds(rank):
            pgs = ProcessGroupCollection(**{f: grid.get_pg(dims) for f, dims in GROUP_DIMS},
                                         embd=embd, pos_embd=pos_embd)
        mine = [g for g in made + [embd, pos_embd] if g is not None]  # None: a group without this rank
        out[name] = ModuleGroups(m, grid, pgs, mine)
    return out


def _new_groups(rank_lists: List[List[int]], rank: int, timeout: timedelta):
    mine = None
    for ranks in rank_lists:
        g = dist.new_group(ranks, timeout=timeout)
        if rank in ranks:
            mine = g
    return mine
