"""Rank roles, matching upstream megatron MIMO's names so user code can move between them."""

import enum
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional

MIMO_LANGUAGE_MODULE_KEY = "language"


class ModuleLayout(enum.Enum):
    COLOCATED = "colocated"
    NON_COLOCATED = "non_colocated"


@dataclass(frozen=True)
class ModuleStageInfo:
    is_first_stage: bool
    is_last_stage: bool


@dataclass(frozen=True)
class RankRole:
    """Which modules this rank holds, and at which pipeline stage of each."""

    modules: Mapping[str, ModuleStageInfo]
    mode: ModuleLayout

    @property
    def has_language_module(self) -> bool:
        return MIMO_LANGUAGE_MODULE_KEY in self.modules

    @property
    def modality_module_names(self) -> list:
        return [n for n in self.modules if n != MIMO_LANGUAGE_MODULE_KEY]

    @property
    def has_modality_modules(self) -> bool:
        return bool(self.modality_module_names)

    def is_first_stage(self, module: str) -> bool:
        return module in self.modules and self.modules[module].is_first_stage

    def is_last_stage(self, module: str) -> bool:
        return module in self.modules and self.modules[module].is_last_stage

    @classmethod
    def build(cls, modality_names: Iterable[str], grid_map: Optional[Mapping[str, Any]],
              rank: Optional[int] = None) -> "RankRole":
        """Role of `rank` (default: this process's rank) from per-module grids.

        A grid is anything with `rank_offset`, `shape` and `dim_names` (megatron's HyperCommGrid or a
        light fake). No grids, or every grid spanning the same ranks with one stage, is COLOCATED.
        """
        names = list(modality_names) + [MIMO_LANGUAGE_MODULE_KEY]
        if not grid_map:
            return cls({n: ModuleStageInfo(True, True) for n in names}, ModuleLayout.COLOCATED)
        if sorted(grid_map) != sorted(names):
            raise ValueError(f"module_to_grid_map keys {sorted(grid_map)} must equal modality names + "
                             f"'{MIMO_LANGUAGE_MODULE_KEY}' = {sorted(names)}")
        if rank is None:
            import torch.distributed as dist

            rank = dist.get_rank()
        spans = {(g.rank_offset, _size(g)) for g in grid_map.values()}
        single_stage = all(_dim(g, "pp") == 1 for g in grid_map.values())
        mode = ModuleLayout.COLOCATED if len(spans) == 1 and single_stage else ModuleLayout.NON_COLOCATED
        modules: Dict[str, ModuleStageInfo] = {}
        for name in names:
            g = grid_map[name]
            local = rank - g.rank_offset
            if 0 <= local < _size(g):
                pp_size = _dim(g, "pp")
                inner = _size(g) // pp_size
                stage = local // inner
                modules[name] = ModuleStageInfo(stage == 0, stage == pp_size - 1)
        return cls(modules, mode)


def _size(grid: Any) -> int:
    n = 1
    for s in grid.shape:
        n *= int(s)
    return n


def _dim(grid: Any, name: str) -> int:
    return int(grid.shape[list(grid.dim_names).index(name)]) if name in grid.dim_names else 1
