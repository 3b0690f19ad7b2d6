"""The printed form of actions, and its parser."""

import pytest

from mimo_runtime.schedule import NO_MICROBATCH, Action, build_schedule, parse_action
from tests.schedule.plans import dag_plan


def test_printed_forms():
    assert str(Action("F", "images", 0, 3)) == "images.0:F3"
    assert str(Action("SEND_F", "images", 1, 3, peer=("language", 0))) == "images.1:SEND_F3>language.0"
    assert str(Action("RECV_F", "language", 0, 3, peer=("images", 1))) == "language.0:RECV_F3<images.1"
    assert str(Action("REDUCE_GRADS", "language", 0, NO_MICROBATCH)) == "language.0:REDUCE"
    assert str(Action("OPT_STEP", "*", 0, NO_MICROBATCH)) == "*.0:OPT"
    assert str(Action("B", "images", 0, 12, chunk=1)) == "images.0c1:B12"


@pytest.mark.parametrize("kind", ["1f1b", "gpipe", "forward"])
def test_every_generated_action_round_trips_through_its_printed_form(kind):
    plan = dag_plan([("images", 2, True), ("audio", 1, False)], 3)
    schedule = build_schedule(plan, 5, kind, frozen_all=["audio"])
    actions = [a for acts in schedule.actions.values() for a in acts]
    assert {a.kind for a in actions} >= ({"F", "SEND_F", "RECV_F"} if kind == "forward" else
                                         {"F", "B", "SEND_F", "RECV_F", "SEND_B", "RECV_B", "REDUCE_GRADS", "OPT_STEP"})
    for a in actions:
        assert parse_action(str(a)) == a


def test_chunked_and_colocated_actions_round_trip():
    for a in [Action("RECV_B", "images", 2, 7, chunk=3, peer=("language", 0)), Action("F", "*", 0, 0),
              Action("OPT_STEP", "*", 0, NO_MICROBATCH)]:
        assert parse_action(str(a)) == a


@pytest.mark.parametrize("text,why", [
    ("images.0:F", "needs a microbatch"),
    ("images.0:SEND_F3", "takes a peer after '>'"),
    ("images.0:RECV_F3>language.0", "takes a peer after '<'"),
    ("images.0:F3>language.0", "takes no peer"),
    ("language.0:REDUCE3", "takes no microbatch"),
    ("language:F3", "cannot parse"),
    ("language.0:X3", "cannot parse"),
])
def test_parse_errors_say_what_is_wrong(text, why):
    with pytest.raises(ValueError, match=why):
        parse_action(text)
