"""Roles and layouts on small hand-checked plans (upstream megatron MIMO's rules)."""

from types import SimpleNamespace

import pytest

from mimo_runtime.errors import ArgumentError
from mimo_runtime.plan import ModuleLayout, ModuleStageInfo, RankRole, colocated_plan, make_plan
from mimo_runtime.topology import topology_from_dict

BOTH = ModuleStageInfo(True, True)


def plan_of(modules, model="tiny-vlm", **top):
    return make_plan(topology_from_dict({"model": model, "modules": modules, **top}))


def test_encoder_ranks_hold_only_the_encoder_and_language_ranks_only_the_language():
    plan = plan_of({"images": {"kind": "encoder", "ranks": 2}, "language": {"kind": "language", "ranks": 2}})
    assert plan.role(0) == RankRole({"images": BOTH}, ModuleLayout.NON_COLOCATED)
    assert plan.role(3) == RankRole({"language": BOTH}, ModuleLayout.NON_COLOCATED)
    assert plan.role(0).has_modality_modules and not plan.role(0).has_language_module
    assert plan.role(3).modality_module_names == []


def test_language_pipeline_stages_are_first_middle_last():
    plan = plan_of({"images": {"kind": "encoder"}, "language": {"kind": "language", "parallel": {"pp": 4}}})
    stages = [plan.role(r).modules["language"] for r in range(1, 5)]
    assert stages == [ModuleStageInfo(True, False), ModuleStageInfo(False, False),
                      ModuleStageInfo(False, False), ModuleStageInfo(False, True)]
    assert not plan.role(0).is_first_stage("language") and not plan.role(1).is_last_stage("images")


def test_colocated_single_stage_modules_give_the_colocated_layout():
    plan = plan_of({"images": {"kind": "encoder", "ranks": 2}, "language": {"kind": "language", "ranks": 2}},
                   placement="colocated")
    assert plan.layout == ModuleLayout.COLOCATED
    assert plan.role(1) == RankRole({"images": BOTH, "language": BOTH}, ModuleLayout.COLOCATED)


def test_a_language_only_pipeline_is_not_colocated():
    # every module spans the same ranks, but no rank runs the whole model: role-based dispatch
    plan = plan_of({"language": {"kind": "language", "parallel": {"pp": 2}}}, model="tiny-lm")
    assert plan.layout == ModuleLayout.NON_COLOCATED


def test_rank_role_without_grids_is_colocated_on_every_module():
    role = RankRole.build(["images", "audio"], None, rank=5)
    assert role == RankRole({"images": BOTH, "audio": BOTH, "language": BOTH}, ModuleLayout.COLOCATED)


def test_rank_role_rejects_a_grid_map_that_misses_a_module():
    grid = SimpleNamespace(rank_offset=0, shape=[1, 1, 1, 1], dim_names=["tp", "cp", "dp", "pp"])
    with pytest.raises(ValueError, match=r"module_to_grid_map keys must match modality module names \+ .language.\. Missing: \[.images.\], Extra: \[\]"):
        RankRole.build(["images"], {"language": grid}, rank=0)


def test_microbatch_arithmetic_follows_the_language_dp():
    plan = plan_of({"images": {"kind": "encoder", "ranks": 4}, "language": {"kind": "language", "ranks": 2}},
                   train={"global_batch": 16, "micro_batch": 2})
    assert plan.num_microbatches == 4  # 16 / (2 x dp 2)
    assert plan.samples_per_microbatch("language") == 2
    assert plan.samples_per_microbatch("images") == 1  # 2 x 2 over encoder dp 4


def test_world_size_must_match_the_topology():
    topo = topology_from_dict({"model": "tiny-lm", "modules": {"language": {"kind": "language", "ranks": 2}}})
    assert make_plan(topo, 2).world_size == 2
    with pytest.raises(ArgumentError, match=r"^--world-size: 3 != 2"):
        make_plan(topo, 3)


def test_colocated_plan_puts_every_module_on_all_ranks_as_data_parallel():
    topo = topology_from_dict({"model": "tiny-vlm", "modules": {
        "images": {"kind": "encoder", "ranks": 2, "parallel": {"tp": 2}},
        "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2}}}})
    plan = colocated_plan(topo, 4)
    assert plan.layout == ModuleLayout.COLOCATED and plan.world_size == 4
    assert {n: m.shape for n, m in plan.modules.items()} == {"images": (1, 1, 4, 1), "language": (1, 1, 4, 1)}
    assert plan.global_batch == 8 and plan.num_microbatches == 1
    with pytest.raises(ArgumentError, match=r"^--nproc: 3 does not divide"):
        colocated_plan(topo, 3)
