"""step_lists: the one-step-per-call pieces a trainer runs are exactly the simulated multi-step lists."""

import pytest

from mimo_runtime.schedule import F, OPT_STEP, SEND_F, STEP_LISTS, Action, build_schedule, build_steps, simulate, step_lists
from tests.schedule.plans import dag_plan


def shifted(actions, s, m):
    return [a if a.mb < 0 else Action(a.kind, a.module, a.stage, a.mb + s * m, a.chunk, a.peer) for a in actions]


def called(lists, node, steps, m):
    """What a trainer runs for `steps` calls: first, steady..., last, each renumbered to its step."""
    names = ["first"] + ["steady"] * (steps - 2) + ["last"]
    return [a for s, name in enumerate(names) for a in shifted(lists[name].actions[node], s, m)]


SHAPES = [([("images", 1, False)], 1, ["images"], 1, 4),
          ([("images", 2, False)], 2, ["images"], 1, 4),
          ([("images", 1, True), ("audio", 2, False)], 2, ["audio"], 2, 3),
          ([("images", 3, True)], 2, [], 1, 8)]  # frozen with a trainable projection: stages 0-1 lead


@pytest.mark.parametrize("encoders,language_pp,frozen_all,lead,m", SHAPES)
@pytest.mark.parametrize("kind", ["1f1b", "gpipe"])
@pytest.mark.parametrize("steps", [2, 3, 5])
def test_calls_one_step_at_a_time_are_the_multi_step_list(encoders, language_pp, frozen_all, lead, m, steps, kind):
    plan = dag_plan(encoders, language_pp)
    lists = step_lists(plan, m, kind, frozen_all=frozen_all, lead=lead, frozen_ahead=True)
    whole = build_steps(plan, m, steps, kind, frozen_all=frozen_all, lead=lead, frozen_ahead=True)
    simulate(whole)  # raises on deadlock
    for node in whole.nodes:
        assert called(lists, node, steps, m) == whole.actions[node], node


def test_nodes_that_train_get_the_plain_list_in_every_call():
    plan = dag_plan([("images", 2, False)], 2)
    lists = step_lists(plan, 4, frozen_all=["images"], lead=1)
    plain = build_schedule(plan, 4, frozen_all=["images"])
    assert lists["plain"].actions == plain.actions
    for name in STEP_LISTS:
        for node in (("language", 0), ("language", 1)):
            assert lists[name].actions[node] == plain.actions[node]
    first, steady, last = (lists[n].actions[("images", 1)] for n in STEP_LISTS[1:])
    assert first != steady != last != plain.actions[("images", 1)]


def test_a_leading_encoder_computes_ahead_before_its_barrier_and_sends_the_carried_forward_first():
    plan = dag_plan([("images", 1, False)], 1)
    lists = step_lists(plan, 4, frozen_all=["images"], lead=2)
    node = ("images", 0)
    for name in ("first", "steady"):
        acts = lists[name].actions[node]
        assert [a.mb for a in acts if a.kind == F][-2:] == [4, 5]  # the next step's 0 and 1, numbered m + j
        assert acts[-1].kind == OPT_STEP
    steady, last = lists["steady"].actions[node], lists["last"].actions[node]
    assert [a.mb for a in steady if a.kind == F] == [2, 3, 4, 5]  # 0 and 1 came from the previous call
    assert [a.mb for a in steady if a.kind == SEND_F][:2] == [0, 1]  # posted after the previous barrier
    assert [a.mb for a in last if a.kind == F] == [2, 3]


def test_without_a_lead_or_training_every_call_is_plain():
    plan = dag_plan([("images", 1, False)], 2)
    for lists in (step_lists(plan, 4, frozen_all=["images"]), step_lists(plan, 4, "forward", lead=1)):
        assert all(lists[n] is lists["plain"] for n in STEP_LISTS)
