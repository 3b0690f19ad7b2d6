"""The simulator: compute and communication costs, the optimizer barrier, and its speed."""

import time

import pytest

from mimo_runtime.schedule import B, F, OPT_STEP, Costs, build_schedule, simulate
from tests.schedule.plans import chain_plan, chain_schedule, dag_plan


def test_communication_costs_latency_plus_bytes_over_bandwidth_each_way():
    # p=2, m=1: F on stage 0, transfer, F and B on stage 1, transfer back, B on stage 0.
    costs = Costs(latency=0.5, bandwidth=100.0, bytes={("language", "language"): 100})
    assert simulate(build_schedule(chain_plan(2), 1), costs).makespan == 1 + 1.5 + 2 + 1.5 + 1
    by_call = Costs(latency=0.5, bandwidth=100.0, bytes=lambda up, down: 100 * (up[1] + 1))
    assert simulate(build_schedule(chain_plan(2), 1), by_call).makespan == 7.0


def test_compute_costs_per_module_and_stage_set_the_pace():
    # The slowest stage (B takes 3) dominates: with m microbatches its 4m of work is on the critical path.
    costs = Costs(forward=1.0, backward={("language", 1): 3.0, "language": 1.0})
    result = simulate(build_schedule(chain_plan(2), 8), costs)
    assert result.busy[("language", 1)] == 8 * 4
    assert result.makespan == 1 + 8 * 4 + 1  # stage 0's first F before, its last B after
    schedule = build_schedule(chain_plan(2), 8)
    starts_ends = zip(schedule.actions[("language", 1)], result.start[("language", 1)], result.end[("language", 1)])
    assert all(e - s == 3.0 for a, s, e in starts_ends if a.kind == B)


def test_missing_costs_are_named():
    with pytest.raises(ValueError, match=r"no F cost of images.0"):
        simulate(build_schedule(dag_plan([("images", 1, False)], 1), 2), Costs(forward={"language": 1.0}))


def test_the_optimizer_step_is_a_barrier_across_every_node():
    plan = dag_plan([("images", 1, True), ("audio", 2, False)], 2)
    schedule = build_schedule(plan, 3)
    result = simulate(schedule, Costs(opt_step=0.25))
    opt_starts = {result.start[n][-1] for n in schedule.nodes}
    opt_ends = {result.end[n][-1] for n in schedule.nodes}
    assert all(schedule.actions[n][-1].kind == OPT_STEP for n in schedule.nodes)
    assert len(opt_ends) == 1 and opt_ends == {result.makespan}
    assert max(opt_starts) == result.makespan - 0.25 and min(opt_starts) < max(opt_starts)


def test_forward_and_backward_take_their_cost_and_start_after_their_inputs():
    schedule = build_schedule(dag_plan([("images", 2, False)], 2), 4)
    result = simulate(schedule)
    end_of = {}
    for node in schedule.nodes:
        for a, s, e in zip(schedule.actions[node], result.start[node], result.end[node]):
            end_of[str(a)] = e
            if a.kind in (F, B):
                assert e - s == 1.0
    for node in schedule.nodes:
        for a, s in zip(schedule.actions[node], result.start[node]):
            if a.kind == "RECV_F":
                sender = f"{a.peer[0]}.{a.peer[1]}:SEND_F{a.mb}>{node[0]}.{node[1]}"
                assert end_of[str(a)] >= end_of[sender]


def test_simulating_64_stages_and_1024_microbatches_takes_well_under_2_seconds():
    schedule = chain_schedule(64, 1024)
    cpu, wall = time.process_time(), time.perf_counter()
    result = simulate(schedule)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"simulate p=64 m=1024: {cpu:.2f} s CPU, {wall:.2f} s wall")
    assert result.bubble_fraction == 63 / 1087
    assert cpu < 1.5  # CPU time: a loaded 2-core machine inflates wall time, not work
