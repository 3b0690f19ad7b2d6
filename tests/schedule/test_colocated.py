"""Colocated plans: one plain per-rank sequence over all modules ("*")."""

import pytest

from mimo_runtime.plan import ModuleLayout, colocated_plan
from mimo_runtime.schedule import COLOCATED, build_schedule, validate
from tests.schedule.plans import preset_plan

VLM = {"images": {"kind": "encoder", "ranks": 2}, "language": {"kind": "language", "ranks": 2}}


def _texts(schedule, plan, rank):
    return " ".join(a.body() for a in schedule.for_rank(plan, rank))


@pytest.mark.parametrize("kind,expected", [
    ("1f1b", "F0 B0 F1 B1 F2 B2 F3 B3 REDUCE OPT"),
    ("gpipe", "F0 F1 F2 F3 B0 B1 B2 B3 REDUCE OPT"),
    ("forward", "F0 F1 F2 F3"),
])
def test_colocated_placement_runs_one_sequence_on_every_rank(kind, expected):
    plan = preset_plan(VLM, model="tiny-vlm", placement="colocated", train={"global_batch": 8, "micro_batch": 1})
    assert plan.layout is ModuleLayout.COLOCATED
    schedule = build_schedule(plan, 4, kind)
    validate(schedule)
    assert schedule.nodes == ((COLOCATED, 0),)
    assert {_texts(schedule, plan, r) for r in range(plan.world_size)} == {expected}
    assert all(a.module == COLOCATED for a in schedule.for_rank(plan, 0))


def test_colocated_reference_plan_of_a_heterogeneous_topology_is_a_plain_sequence():
    hetero = preset_plan({"images": {"kind": "encoder", "ranks": 2, "parallel": {"pp": 2}},
                          "language": {"kind": "language", "ranks": 2, "parallel": {"pp": 2}}}, model="tiny-vlm")
    plan = colocated_plan(hetero.topology, 1)
    schedule = build_schedule(plan, plan.num_microbatches)
    validate(schedule)
    m = plan.num_microbatches
    assert _texts(schedule, plan, 0) == " ".join(f"F{i} B{i}" for i in range(m)) + " REDUCE OPT"


def test_for_rank_rejects_ranks_outside_the_plan():
    plan = preset_plan(VLM, model="tiny-vlm", placement="colocated")
    with pytest.raises(ValueError, match="outside the plan's world of 2 ranks"):
        build_schedule(plan, 2).for_rank(plan, 2)
