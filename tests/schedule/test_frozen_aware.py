"""Frozen-encoder-aware scheduling: forwards run ahead (within a step, and across the step boundary)."""

import pytest

from mimo_runtime.schedule import B, F, OPT_STEP, RECV_B, SEND_B, Costs, build_schedule, build_steps, simulate, validate
from tests.schedule.plans import chain_plan, dag_plan

COSTS = Costs(forward={"images": 1.5, "language": 1.0}, backward={"images": 0.1, "language": 2.0}, latency=0.05)


def step_time(schedule, result, steps):
    """Steady-state seconds per step: between the first and the last optimizer barrier."""
    node = schedule.nodes[-1]
    ends = [e for a, e in zip(schedule.actions[node], result.end[node]) if a.kind == OPT_STEP]
    assert len(ends) == steps
    return (ends[-1] - ends[0]) / (steps - 1)


def test_one_step_is_build_schedule_itself():
    plan = dag_plan([("images", 2, True)], 2)
    assert build_steps(plan, 4, 1).actions == build_schedule(plan, 4).actions


def test_steps_repeat_the_lists_with_microbatches_numbered_per_step():
    plan = dag_plan([("images", 1, False)], 2)
    one, three = build_schedule(plan, 4), build_steps(plan, 4, 3)
    for node in one.nodes:
        acts = three.actions[node]
        assert len(acts) == 3 * len(one.actions[node])
        assert sum(a.kind == OPT_STEP for a in acts) == 3
        assert sorted(a.mb for a in acts if a.kind == F) == list(range(12))
    simulate(three)  # raises on deadlock


def test_a_frozen_encoder_computes_the_next_steps_first_forwards_before_the_barrier():
    plan = dag_plan([("images", 1, False)], 2)
    acts = build_steps(plan, 4, 2, frozen_all=["images"], lead=2).actions[("images", 0)]
    opt = next(i for i, a in enumerate(acts) if a.kind == OPT_STEP)
    before = [a.mb for a in acts[:opt] if a.kind == F]
    assert before == [0, 1, 2, 3, 4, 5]  # step 0, then step 1's microbatches 0 and 1
    sends_after = [a.mb for a in acts[opt + 1:] if a.kind == "SEND_F"]
    assert sends_after[:2] == [4, 5]  # posted after the barrier: the language receives them in its next step


@pytest.mark.parametrize("encoder_pp,language_pp,encoder_cost,m", [(1, 1, 1.0, 8), (1, 2, 1.5, 8), (1, 2, 3.0, 4),
                                                                    (2, 2, 1.0, 8), (3, 4, 0.5, 16)])
def test_leading_a_frozen_encoder_removes_its_latency_from_every_step(encoder_pp, language_pp, encoder_cost, m):
    plan = dag_plan([("images", encoder_pp, False)], language_pp)
    costs = Costs(forward={"images": encoder_cost, "language": 1.0}, backward={"images": 0.0, "language": 2.0},
                  latency=0.05)
    plain = build_steps(plan, m, 5, frozen_all=["images"])
    ahead = build_steps(plan, m, 5, frozen_all=["images"], lead=1)
    t_plain, t_ahead = (step_time(s, simulate(s, costs), 5) for s in (plain, ahead))
    # the language no longer waits for the encoder's first forward through every encoder stage and the
    # hops between them; only the last hop remains, posted right after the barrier
    hidden = encoder_pp * encoder_cost + (encoder_pp - 1) * 0.05
    assert t_ahead == pytest.approx(t_plain - hidden)


def test_the_encoder_sends_no_gradients_and_runs_no_backward_when_frozen_entirely():
    plan = dag_plan([("images", 2, False)], 2)
    schedule = build_steps(plan, 4, 3, frozen_all=["images"], lead=4)
    for stage in (0, 1):
        kinds = {a.kind for a in schedule.actions[("images", stage)]}
        assert not kinds & {B, RECV_B, SEND_B}
    assert not any(a.kind == SEND_B and a.peer[0] == "images" for a in schedule.actions[("language", 0)])


def test_frozen_ahead_runs_every_projection_forward_before_its_first_backward():
    plan = dag_plan([("images", 2, True)], 2)
    schedule = build_schedule(plan, 6, frozen_ahead=True)
    validate(schedule)
    compute = [a for a in schedule.actions[("images", 1)] if a.kind in (F, B)]
    assert [a.kind for a in compute] == [F] * 6 + [B] * 6
    plain = build_schedule(plan, 6)
    assert schedule.actions[("language", 0)] == plain.actions[("language", 0)]


def test_frozen_ahead_is_never_slower_and_faster_when_the_encoder_is_the_slow_side():
    plan = dag_plan([("images", 1, True)], 2)
    slow = Costs(forward={"images": 3.5, "language": 1.0}, backward={"images": 0.1, "language": 2.0}, latency=0.05)
    for costs in (COSTS, slow):
        plain = simulate(build_schedule(plan, 8), costs).makespan
        ahead = simulate(build_schedule(plan, 8, frozen_ahead=True), costs).makespan
        assert ahead <= plain
    ahead, plain = (simulate(build_schedule(plan, 8, frozen_ahead=f), slow).makespan for f in (True, False))
    assert ahead < plain


@pytest.mark.parametrize("p,m,slack", [(2, 8, 1), (4, 16, 1), (4, 16, 2), (8, 32, 1)])
def test_slack_hides_transfer_latency_for_slack_more_activations(p, m, slack):
    costs = Costs(forward=1.0, backward=2.0, latency=0.5)
    plain, padded = build_schedule(chain_plan(p), m), build_schedule(chain_plan(p), m, slack=slack)
    r_plain, r_padded = validate(plain), validate(padded)
    assert simulate(padded, costs).makespan < simulate(plain, costs).makespan
    for node in plain.nodes:
        extra = slack if node[1] < p - 1 else 0
        assert r_padded.peak_inflight[node] == min(r_plain.peak_inflight[node] + extra, m)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="slack"):
        build_schedule(chain_plan(2), 4, slack=-1)
    with pytest.raises(ValueError, match="lead"):
        build_steps(chain_plan(2), 4, 2, lead=5)
    with pytest.raises(ValueError, match="steps"):
        build_steps(chain_plan(2), 4, 0)
