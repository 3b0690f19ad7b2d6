"""Homogeneous chains: the textbook 1F1B / GPipe numbers, exactly."""

import pytest

from mimo_runtime.schedule import B, F, OPT_STEP, REDUCE_GRADS, build_schedule, simulate, validate
from tests.schedule.plans import chain_plan, chain_schedule

CHAINS = [(1, 1), (2, 1), (2, 4), (4, 4), (4, 3), (4, 16), (8, 2), (8, 32), (16, 5), (64, 1024)]


@pytest.mark.parametrize("p,m", CHAINS)
def test_1f1b_bubble_with_unit_costs_is_p_minus_1_over_m_plus_p_minus_1(p, m):
    result = simulate(chain_schedule(p, m))
    assert result.bubble_fraction == (p - 1) / (m + p - 1)
    assert result.makespan == 2 * (m + p - 1)


@pytest.mark.parametrize("p,m", CHAINS)
def test_1f1b_keeps_at_most_p_minus_stage_activations_in_flight(p, m):
    result = validate(chain_schedule(p, m))
    for (_, stage), peak in result.peak_inflight.items():
        assert peak == min(p - stage, m)


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (8, 3), (16, 64)])
def test_gpipe_keeps_all_m_in_flight_with_the_same_bubble(p, m):
    result = validate(build_schedule(chain_plan(p), m, "gpipe"))
    assert set(result.peak_inflight.values()) == {m}
    assert result.bubble_fraction == (p - 1) / (m + p - 1)


def test_1f1b_warmup_is_the_distance_to_the_last_stage():
    schedule = build_schedule(chain_plan(4), 8)
    for node in schedule.nodes:
        compute = [a for a in schedule.actions[node] if a.kind in (F, B)]
        first_b = next(i for i, a in enumerate(compute) if a.kind == B)
        assert first_b == 4 - node[1]  # warm-up forwards plus the steady state's first
        assert [a.mb for a in compute if a.kind == F] == list(range(8))
        assert [a.mb for a in compute if a.kind == B] == list(range(8))


def test_every_stage_reduces_once_after_its_last_backward_and_ends_with_the_optimizer_step():
    schedule = build_schedule(chain_plan(3), 5)
    for node in schedule.nodes:
        kinds = [a.kind for a in schedule.actions[node]]
        assert kinds[-2:] == [REDUCE_GRADS, OPT_STEP]
        assert kinds.count(REDUCE_GRADS) == kinds.count(OPT_STEP) == 1
        assert max(i for i, k in enumerate(kinds) if k == B) < kinds.index(REDUCE_GRADS)


def test_forward_only_has_no_backward_reduction_or_optimizer_step():
    schedule = build_schedule(chain_plan(4), 6, "forward")
    validate(schedule)
    kinds = {a.kind for acts in schedule.actions.values() for a in acts}
    assert kinds == {"F", "SEND_F", "RECV_F"}
