"""Multi-module DAGs: fan-in to language stage 0, encoder PP, frozen encoders, generated at random."""

import random

import pytest

from mimo_runtime.schedule import (
    B, F, OPT_STEP, RECV_B, RECV_F, REDUCE_GRADS, SEND_B, SEND_F, build_schedule, simulate, validate)
from mimo_runtime.schedule.graph import depth_to_sink
from tests.schedule.plans import dag_plan, preset_plan, random_dag


def _kinds(schedule, node):
    return [a.kind for a in schedule.actions[node]]


def _check_generated(plan, m, kind, frozen_all):
    schedule = build_schedule(plan, m, kind, frozen_all)
    result = validate(schedule)
    depth = depth_to_sink(schedule.graph)
    for node in schedule.nodes:
        name, stage = node
        kinds = _kinds(schedule, node)
        backward = kind != "forward" and name not in frozen_all and (
            name == "language" or not plan.modules[name].frozen or stage == plan.modules[name].pp - 1)
        assert (B in kinds) == backward, node
        assert kinds.count(REDUCE_GRADS) == (1 if backward else 0), node
        assert kinds.count(OPT_STEP) == (0 if kind == "forward" else 1) and (kind == "forward" or kinds[-1] == OPT_STEP)
        if backward and kind == "1f1b":
            assert result.peak_inflight[node] == min(depth[node] + 1, m), node
        if backward and kind == "gpipe":
            assert result.peak_inflight[node] == m, node
    for rank in range(plan.world_size):
        name = plan.modules_on(rank)[0]
        node = (name, plan.modules[name].coords(rank).pp)
        assert schedule.for_rank(plan, rank) is schedule.actions[node]
    return schedule, result


@pytest.mark.parametrize("seed", range(24))
def test_generated_dags_always_validate(seed):
    rng = random.Random(seed)
    plan, frozen_all = random_dag(rng)
    m = int(2 ** rng.uniform(0, 10))  # log-uniform in 1..1024: mostly small, some large
    _check_generated(plan, m, rng.choice(["1f1b", "1f1b", "gpipe", "forward"]), frozen_all)


@pytest.mark.parametrize("kind", ["1f1b", "gpipe"])
def test_largest_dag_64_stages_1024_microbatches_validates(kind):
    plan = dag_plan([("images", 12, True), ("audio", 8, False), ("video", 4, False)], 40)
    schedule, result = _check_generated(plan, 1024, kind, ["video"])
    assert len(schedule.nodes) == 64


def test_language_stage_0_receives_from_every_encoder_before_each_forward():
    plan = dag_plan([("images", 2, False), ("audio", 1, False)], 2)
    acts = build_schedule(plan, 3).actions[("language", 0)]
    for mb in range(3):
        f = acts.index(next(a for a in acts if a.kind == F and a.mb == mb))
        peers = {a.peer for a in acts[:f] if a.kind == RECV_F and a.mb == mb}
        assert peers == {("images", 1), ("audio", 0)}
    sends = {(a.mb, a.peer) for a in acts if a.kind == SEND_B}
    assert sends == {(mb, p) for mb in range(3) for p in [("images", 1), ("audio", 0)]}


def test_frozen_encoder_trains_only_its_projection_on_the_last_stage():
    plan = dag_plan([("images", 3, True)], 2)
    schedule = build_schedule(plan, 4)
    validate(schedule)
    for stage in (0, 1):
        kinds = set(_kinds(schedule, ("images", stage)))
        assert kinds == {F, SEND_F, OPT_STEP} | ({RECV_F} if stage else set())
    last = set(_kinds(schedule, ("images", 2)))
    assert {RECV_B, B, REDUCE_GRADS} <= last and SEND_B not in last
    assert schedule.trains[("images", 2)] and not schedule.trains[("images", 0)]


def test_a_module_frozen_entirely_gets_no_backward_and_no_gradients():
    plan = dag_plan([("images", 2, False), ("audio", 1, False)], 2)
    schedule = build_schedule(plan, 4, frozen_all=["images"])
    validate(schedule)
    for stage in (0, 1):
        assert not {B, RECV_B, SEND_B, REDUCE_GRADS} & set(_kinds(schedule, ("images", stage)))
    peers = {a.peer for a in schedule.actions[("language", 0)] if a.kind == SEND_B}
    assert peers == {("audio", 0)}


def test_frozen_all_must_name_encoders():
    with pytest.raises(ValueError, match="not encoders"):
        build_schedule(dag_plan([("images", 1, False)], 1), 2, frozen_all=["language"])


def test_encoder_warmup_follows_its_longest_path_to_the_last_language_stage():
    plan = dag_plan([("images", 3, False), ("audio", 1, False)], 2)
    depth = depth_to_sink(build_schedule(plan, 2).graph)
    assert depth == {("images", 0): 4, ("images", 1): 3, ("images", 2): 2, ("audio", 0): 2,
                     ("language", 0): 1, ("language", 1): 0}
    acts = build_schedule(plan, 8).actions[("images", 0)]
    compute = [a.kind for a in acts if a.kind in (F, B)]
    assert compute.index(B) == 5


def test_preset_topologies_build_and_validate():
    plan = preset_plan({"images": {"kind": "encoder", "ranks": 4, "parallel": {"pp": 2, "dp": 2}, "frozen": True},
                        "audio": {"kind": "encoder", "ranks": 1},
                        "language": {"kind": "language", "ranks": 8, "parallel": {"tp": 2, "pp": 4}}},
                       train={"global_batch": 16, "micro_batch": 2})
    for kind in ("1f1b", "gpipe", "forward"):
        schedule = build_schedule(plan, plan.num_microbatches, kind)
        validate(schedule)
        assert [schedule.node_of(plan, r) for r in range(plan.world_size)] == (
            [("images", 0)] * 2 + [("images", 1)] * 2 + [("audio", 0)] + [("language", s) for s in range(4) for _ in (0, 1)])


def test_an_encoder_feeding_a_pipelined_language_model_is_timed_like_a_three_stage_chain():
    result = simulate(build_schedule(dag_plan([("images", 1, False)], 2), 2))
    assert result.makespan == 2 * (2 + 3 - 1)
    assert result.bubble_fraction == (3 - 1) / (2 + 3 - 1)
