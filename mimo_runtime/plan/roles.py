"""Rank roles, matching upstream megatron MIMO's names so user code can move between them."""

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional

MIMO_LANGUAGE_MODULE_KEY = "language"


class ModuleLayout(enum.Enum):
    COLOCATED = "colocated"
    NON_COLOCATED = "non_colocated"


@dataclass(frozen=True)
class ModuleStageInfo:
    is_first_stage: bool
    is_last_stage: bool


@dataclass
class RankRole:
    """Which modules this rank holds, and at which pipeline stage of each (upstream's defaults;
    mutable as upstream's, so user code and tests may patch its methods)."""

    modules: Mapping[str, ModuleStageInfo] = field(default_factory=dict)
    mode: ModuleLayout = ModuleLayout.COLOCATED

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
    def build(cls, modality_names: Iterable[str], grid_map: Optional[Mapping[str, Any]] = None,
              rank: Optional[int] = None) -> "RankRole":
        """Role of `rank` (default: this process's rank) from per-module grids.

        A grid needs what upstream reads: `rank_offset`, `size` (or `shape`, whose product it is),
        `dim_names` and, for a "pp" dimension, `get_pg("pp")`. A grid with `shape` (megatron's
        HyperCommGrid, our fakes) gives any rank's stage from its coordinates, so `rank=` (our
        extension) builds another rank's role without processes. No grids, or every grid spanning
        the same ranks with one stage, is COLOCATED.
        """
        names = list(modality_names) + [MIMO_LANGUAGE_MODULE_KEY]
        if not grid_map:
            return cls({n: ModuleStageInfo(True, True) for n in names}, ModuleLayout.COLOCATED)
        check_grid_map_keys(modality_names, grid_map)
        if rank is None:
            import torch.distributed as dist

            rank = dist.get_rank()
        spans = {(g.rank_offset, grid_size(g)) for g in grid_map.values()}
        single_stage = all(_pp_size(g) == 1 for g in grid_map.values())
        mode = ModuleLayout.COLOCATED if len(spans) == 1 and single_stage else ModuleLayout.NON_COLOCATED
        modules: Dict[str, ModuleStageInfo] = {}
        for name in names:
            g = grid_map[name]
            if g.rank_offset <= rank < g.rank_offset + grid_size(g):
                modules[name] = _stage(g, rank)
        if not modules:
            raise RuntimeError(f"Rank {rank} is not in any module grid. Check module_to_grid_map configuration.")
        return cls(modules, mode)


def check_grid_map_keys(modality_names: Iterable[str], grid_map: Mapping[str, Any]) -> None:
    """Upstream's check (and wording): the keys are the modality names + "language"."""
    expected, keys = set(modality_names) | {MIMO_LANGUAGE_MODULE_KEY}, set(grid_map)
    if keys != expected:
        raise ValueError(f"module_to_grid_map keys must match modality module names + "
                         f"'{MIMO_LANGUAGE_MODULE_KEY}'. Missing: {sorted(expected - keys)}, "
                         f"Extra: {sorted(keys - expected)}")


def grid_size(grid: Any) -> int:
    if hasattr(grid, "shape"):
        n = 1
        for s in grid.shape:
            n *= int(s)
        return n
    return int(grid.size)


def _pp_size(grid: Any) -> int:
    dims = list(grid.dim_names)
    if "pp" not in dims:
        return 1
    if hasattr(grid, "shape"):
        return int(grid.shape[dims.index("pp")])
    return grid.get_pg("pp").size()


def _stage(grid: Any, rank: int) -> ModuleStageInfo:
    dims = list(grid.dim_names)
    if "pp" not in dims:
        return ModuleStageInfo(True, True)
    if hasattr(grid, "shape"):
        # dim_names run fastest first (HyperCommGrid's layout): pp's stride is the product before it
        stride = 1
        for s in grid.shape[:dims.index("pp")]:
            stride *= int(s)
        pp_size = int(grid.shape[dims.index("pp")])
        pp_rank = ((rank - grid.rank_offset) // stride) % pp_size
    else:
        pg = grid.get_pg("pp")
        pp_rank, pp_size = pg.rank(), pg.size()
    return ModuleStageInfo(pp_rank == 0, pp_rank == pp_size - 1)
