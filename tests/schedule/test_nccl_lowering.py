"""The lowering to p2p groups (schedule/lower.py, comm/lowering.py) and NCCL's rules (schedule/nccl.py)."""

import glob
import random
from dataclasses import replace

import pytest

from mimo_runtime.comm.lowering import RankOps, lower_plan, rank_nodes, step_programs
from mimo_runtime.plan import make_plan
from mimo_runtime.schedule import Action, ScheduleError, build_schedule, build_steps, simulate
from mimo_runtime.schedule.lower import Group, p2p_json, posted_in_list_order
from mimo_runtime.schedule.nccl import NcclDeadlock, check_nccl
from mimo_runtime.topology import load_topology
from tests.schedule.plans import chain_plan, random_dag

# demo.yaml (the layout of vlm-4rank.yaml) reads a dataset `make demo` writes first
TOPOLOGIES = sorted(p for p in glob.glob("topologies/*.yaml") if not p.endswith("demo.yaml"))


def _vlm4():
    plan = make_plan(load_topology("topologies/vlm-4rank.yaml"))
    return plan, build_schedule(plan, plan.num_microbatches)


def test_vlm_4rank_lists_posted_in_list_order_deadlock_under_nccl():
    plan, schedule = _vlm4()
    posted = posted_in_list_order(schedule, rank_nodes(schedule, plan), RankOps(plan).expand)
    with pytest.raises(NcclDeadlock) as e:
        check_nccl(posted)
    text = str(e.value)
    assert "4 of 4 ranks cannot finish" in text
    assert "rank 0 group #2 [send>2] (images.0:SEND_F1>language.0) waits for rank 2" in text
    assert "rank 2 group #2 [send>0] (language.0:SEND_B0>images.0) waits for rank 0" in text


def test_lowered_vlm_4rank_pairs_each_send_with_the_receive_that_follows_it():
    plan, schedule = _vlm4()
    programs = lower_plan(schedule, plan)
    check_nccl(programs)
    assert p2p_json(programs[0]) == [[["send", 2], ["send", 3]]] + [[["recv", 2], ["send", 2], ["send", 3]]] * 3 \
        + [[["recv", 2]]]
    assert p2p_json(programs[2]) == [[["recv", 0], ["recv", 1]]] + \
        [[["send", 0], ["send", 1], ["recv", 0], ["recv", 1]]] * 3 + [[["send", 0], ["send", 1]]]
    assert p2p_json(programs[3]) == [[["recv", 0], ["recv", 1]]] * 4  # TP replication: its own copy, no gradient


@pytest.mark.parametrize("path", TOPOLOGIES)
def test_every_list_of_the_test_topologies_is_deadlock_free_under_nccl(path):
    plan = make_plan(load_topology(path))
    m = plan.num_microbatches
    for kind in ("1f1b", "gpipe", "forward"):
        check_nccl(lower_plan(build_schedule(plan, m, kind), plan))
    frozen = tuple(plan.encoders)
    for frozen_all in ((), frozen):
        for name, programs in step_programs(plan, m, "1f1b", frozen_all, lead=1, frozen_ahead=True).items():
            check_nccl(programs)


def test_frozen_encoder_running_ahead_lowers_deadlock_free_where_list_order_deadlocks():
    plan = make_plan(load_topology("topologies/vlm-pp2-3rank.yaml"))
    frozen = replace(plan, modules={n: replace(m, frozen=m.kind == "encoder") for n, m in plan.modules.items()})
    schedule = build_schedule(frozen, 8, frozen_ahead=True)
    with pytest.raises(NcclDeadlock):
        check_nccl(posted_in_list_order(schedule, rank_nodes(schedule, frozen), RankOps(frozen).expand))
    check_nccl(lower_plan(schedule, frozen))


@pytest.mark.parametrize("seed", range(25))
def test_large_generated_topologies_lower_deadlock_free(seed):
    rng = random.Random(seed)
    plan, frozen_all = random_dag(rng, max_stages=40)
    m = rng.choice([1, 2, 3, 8, 17, 64])
    kind = rng.choice(["1f1b", "1f1b", "gpipe", "forward"])
    options = {"frozen_ahead": rng.random() < 0.5, "slack": rng.choice([0, 0, 1])}
    check_nccl(lower_plan(build_schedule(plan, m, kind, frozen_all, **options), plan))
    if kind != "forward":
        lead = rng.randint(0, m)
        check_nccl(lower_plan(build_steps(plan, m, 2, kind, frozen_all, lead, **options), plan))


def test_nccl_costs_of_a_lowered_chain_equal_the_asynchronous_simulation():
    plan = chain_plan(4)
    schedule = build_schedule(plan, 8)
    nccl = check_nccl(lower_plan(schedule, plan))
    sim = simulate(schedule)
    assert nccl.makespan == sim.makespan and nccl.bubble_fraction == pytest.approx(sim.bubble_fraction)


def _group(*ops):
    return Group(((Action("F", "x", 0, 0), tuple(ops)),))


def test_a_three_rank_cycle_deadlocks_though_every_pair_posts_in_a_consistent_order():
    # 0 sends to 1 then receives from 2; 1 sends to 2 then receives from 0; 2 sends to 0 then receives from 1:
    # each pair's one message is posted once on each side, and no rank gets past its first (blocking) send
    programs = {0: [_group(("send", 1)), _group(("recv", 2))],
                1: [_group(("send", 2)), _group(("recv", 0))],
                2: [_group(("send", 0)), _group(("recv", 1))]}
    with pytest.raises(NcclDeadlock) as e:
        check_nccl(programs)
    assert e.value.stuck == {0: 0, 1: 0, 2: 0}
    batched = {r: [_group(*(g.ops[0] for g in p))] for r, p in programs.items()}  # one batch each: fine
    check_nccl(batched)


def test_a_send_without_its_receive_is_named():
    with pytest.raises(ScheduleError, match=r"rank 0 group #0 \[send>1\]: send #0 with rank 1 has no matching "
                                            r"receive on rank 1 \(0 posted there\)"):
        check_nccl({0: [_group(("send", 1))], 1: []})
