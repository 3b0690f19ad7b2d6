"""Upstream's RankRole contract (megatron/core/models/mimo/config/role.py at d98e8a64) on
mimo_runtime's RankRole, in a one-rank gloo world with upstream's MockGrid.

upstream's tests/unit_tests/models/mimo/test_mimo_role.py is not in the stored copy of
Megatron-LM this port was made from, so these cases are written from role.py's docstrings and
code: what `build` dispatches to, and what each property reports.
"""

import pytest

from mimo_runtime.model import MIMO_LANGUAGE_MODULE_KEY, ModuleLayout, ModuleStageInfo, RankRole
from tests.model.upstream.test_mimo_model import MockGrid


def test_default_role_is_colocated_and_empty():
    role = RankRole()
    assert role.mode == ModuleLayout.COLOCATED and role.modules == {}
    assert not role.has_language_module and not role.has_modality_modules


def test_build_without_grid_map_is_colocated_with_every_module_whole():
    role = RankRole.build(["images", "audio"])
    assert role.mode == ModuleLayout.COLOCATED
    assert list(role.modules) == ["images", "audio", MIMO_LANGUAGE_MODULE_KEY]
    assert all(role.is_first_stage(n) and role.is_last_stage(n) for n in role.modules)


def test_build_with_grids_on_the_same_ranks_is_colocated():
    role = RankRole.build(["images"], {"images": MockGrid(), MIMO_LANGUAGE_MODULE_KEY: MockGrid()})
    assert role.mode == ModuleLayout.COLOCATED
    assert role.has_language_module and role.modality_module_names == ["images"]


def test_build_with_separate_grids_reads_the_pp_group():
    grids = {"images": MockGrid(dim_names=["pp"], pp_rank=2, pp_size=3),
             MIMO_LANGUAGE_MODULE_KEY: MockGrid(rank_offset=1)}
    role = RankRole.build(["images"], grids)
    assert role.mode == ModuleLayout.NON_COLOCATED
    assert role.modules == {"images": ModuleStageInfo(is_first_stage=False, is_last_stage=True)}
    assert role.has_modality_modules and not role.has_language_module


def test_grid_without_pp_dimension_is_first_and_last_stage():
    role = RankRole.build(["images"], {"images": MockGrid(rank_offset=1), MIMO_LANGUAGE_MODULE_KEY: MockGrid()})
    assert role.modules == {MIMO_LANGUAGE_MODULE_KEY: ModuleStageInfo(True, True)}


def test_rank_outside_every_grid_raises():
    with pytest.raises(RuntimeError, match="is not in any module grid"):
        RankRole.build(["images"], {"images": MockGrid(rank_offset=1), MIMO_LANGUAGE_MODULE_KEY: MockGrid(rank_offset=2)})


def test_stage_queries_for_modules_not_held_are_false():
    role = RankRole(modules={"images": ModuleStageInfo(True, False)}, mode=ModuleLayout.NON_COLOCATED)
    assert role.is_first_stage("images") and not role.is_last_stage("images")
    assert not role.is_first_stage(MIMO_LANGUAGE_MODULE_KEY) and not role.is_last_stage(MIMO_LANGUAGE_MODULE_KEY)
