"""Per-module process groups built from the Plan, once, in one global order."""

from mimo_runtime.groups.build import GROUP_DIMS, ModuleGroups, build_module_groups, embedding_rank_lists

__all__ = ["build_module_groups", "ModuleGroups", "GROUP_DIMS", "embedding_rank_lists"]
