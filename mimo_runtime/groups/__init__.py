"""Per-module process groups built from the Plan, once, in one global order."""

from mimo_runtime.groups.build import GROUP_DIMS, ModuleGroups, build_module_groups, embedding_rank_lists
from mimo_runtime.groups.world import ensure_one_rank_world, one_rank_world, release_with

__all__ = ["build_module_groups", "ModuleGroups", "GROUP_DIMS", "embedding_rank_lists", "ensure_one_rank_world",
           "one_rank_world", "release_with"]
