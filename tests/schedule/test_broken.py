"""Deliberately broken lists are caught, naming node, ranks and action, with the grid printed."""

import dataclasses

import pytest

from mimo_runtime.schedule import (
    Action, ScheduleError, build_schedule, parse_action, rendezvous_deadlock, simulate, validate)
from tests.schedule.plans import chain_plan, dag_plan


def _edit(schedule, node, texts):
    """The schedule with `node`'s list replaced by the printed actions `texts`."""
    actions = dict(schedule.actions)
    actions[node] = [parse_action(f"{node[0]}.{node[1]}:{t}") for t in texts.split()]
    return dataclasses.replace(schedule, actions=actions)


def _bodies(schedule, node):
    return " ".join(a.body() for a in schedule.actions[node])


def _broken(schedule, node, old, new):
    text = _bodies(schedule, node)
    assert old in text
    return _edit(schedule, node, text.replace(old, new, 1))


def test_the_unbroken_two_stage_list_is_valid():
    schedule = build_schedule(chain_plan(2), 3)
    validate(schedule)
    assert _bodies(schedule, ("language", 1)) == ("RECV_F0<language.0 F0 B0 SEND_B0>language.0 RECV_F1<language.0 F1 "
                                                   "B1 SEND_B1>language.0 RECV_F2<language.0 F2 B2 SEND_B2>language.0 "
                                                   "REDUCE OPT")


def test_missing_receive_is_reported_at_the_forward_that_needs_it():
    schedule = _broken(build_schedule(chain_plan(2), 3), ("language", 1), "RECV_F1<language.0 ", "")
    with pytest.raises(ScheduleError) as e:
        validate(schedule)
    msg = str(e.value)
    assert msg.startswith("node language.1 (rank 1), action #4 language.1:F1: F1 runs before RECV_F1<language.0")
    assert "language.1  rank 1  RECV_F0<language.0 F0 B0 SEND_B0>language.0 [F1]" in msg  # the grid, marked
    assert (e.value.node, e.value.index, str(e.value.action)) == (("language", 1), 4, "language.1:F1")


def test_send_without_receive_names_the_receive_it_lacks():
    schedule = _broken(build_schedule(chain_plan(2), 2), ("language", 1), " SEND_B0>language.0", "")
    with pytest.raises(ScheduleError, match=r"node language.0 \(rank 0\), action #\d+ language.0:RECV_B0<language.1: "
                                            r"no matching send: language.1:SEND_B0>language.0 is not in language.1's list"):
        validate(schedule)


def test_swapped_order_that_deadlocks_is_caught_with_the_wait_cycle():
    # language.0 waits for B0's gradient before sending F0's activation, which language.1 needs to make it.
    schedule = _broken(build_schedule(chain_plan(2), 3), ("language", 0),
                       "F0 SEND_F0>language.1 F1 SEND_F1>language.1 RECV_B0<language.1",
                       "F0 RECV_B0<language.1 SEND_F0>language.1 F1 SEND_F1>language.1")
    with pytest.raises(ScheduleError) as e:
        validate(schedule)
    msg = str(e.value)
    assert "node language.0 (rank 0), action #1 language.0:RECV_B0<language.1: deadlock with asynchronous sends" in msg
    assert "2 of 2 stage nodes cannot finish" in msg
    assert ("language.0:RECV_B0<language.1 waits for language.1:SEND_B0>language.0 (#3 of language.1), but language.1 "
            "stops at #0 language.1:RECV_F0<language.0") in msg
    assert "a cycle" in msg
    assert "[RECV_B0<language.1]" in msg and "[RECV_F0<language.0]" in msg


def test_receives_swapped_on_a_channel_are_caught_because_messages_match_in_posting_order():
    # Deadlock-free if messages carried tags, but the executor's are matched first-come first-served.
    schedule = build_schedule(dag_plan([("images", 1, False)], 1), 3, "forward")
    schedule = _broken(schedule, ("language", 0), "RECV_F0<images.0 F0 RECV_F1<images.0 F1",
                       "RECV_F1<images.0 RECV_F0<images.0 F0 F1")
    with pytest.raises(ScheduleError, match=r"action #0 language.0:RECV_F1<images.0: receive #0 from images.0 is out of "
                                            r"order: images.0 sends SEND_F0 as its message #0"):
        validate(schedule)


@pytest.mark.parametrize("old,new,why", [
    ("REDUCE OPT", "OPT", "REDUCE_GRADS is missing"),
    (" OPT", "", "ends every node with exactly one OPT_STEP"),
    ("REDUCE OPT", "OPT REDUCE", "OPT_STEP must be the node's last action"),
    ("B0 SEND_B0>language.0 ", "SEND_B0>language.0 B0 ", "sends microbatch 0 before B0 produced it"),
    ("F2 B2", "F2 B2 B2", "duplicate of action"),
    ("B2 SEND_B2>language.0 REDUCE ", "", "B2 never runs"),
    ("B2 SEND_B2>language.0 ", "", "gradients are reduced before the last backward"),
    ("F2 B2", "F2 B2 F3", "microbatch 3 is outside 0..2"),
    ("RECV_F2<language.0", "RECV_F2<language.1", "not a neighbour"),
])
def test_structural_mistakes_are_named(old, new, why):
    schedule = _broken(build_schedule(chain_plan(2), 3), ("language", 1), old, new)
    with pytest.raises(ScheduleError, match=why) as e:
        validate(schedule)
    assert e.value.node == ("language", 1)


def test_backward_on_a_frozen_stage_is_rejected():
    schedule = build_schedule(dag_plan([("images", 2, True)], 1), 2)
    schedule = _broken(schedule, ("images", 0), "F1 SEND_F1>images.1", "F1 SEND_F1>images.1 B0")
    with pytest.raises(ScheduleError, match="images.0:B0: this node runs no backward"):
        validate(schedule)


def test_a_missing_optimizer_step_on_one_node_deadlocks_the_others_at_the_barrier():
    schedule = _broken(build_schedule(chain_plan(2), 2), ("language", 1), " OPT", "")
    with pytest.raises(ScheduleError, match="waits for every node at OPT_STEP; never there: language.1"):
        simulate(schedule)


def test_rendezvous_mode_is_reported_separately():
    schedule = build_schedule(chain_plan(2), 3)
    validate(schedule)  # fine under the executor's asynchronous sends
    error = rendezvous_deadlock(schedule)
    assert error is not None and "deadlock with blocking (rendezvous) sends" in str(error)
    with pytest.raises(ScheduleError, match="rendezvous"):
        validate(schedule, rendezvous=True)
    assert rendezvous_deadlock(build_schedule(chain_plan(2), 3, "gpipe")) is None


def test_errors_at_1024_microbatches_show_a_window_of_the_grid():
    schedule = build_schedule(chain_plan(4), 1024)
    acts = list(schedule.actions[("language", 3)])
    del acts[2000]
    with pytest.raises(ScheduleError) as e:
        validate(dataclasses.replace(schedule, actions={**schedule.actions, ("language", 3): acts}))
    assert len(str(e.value)) < 4000 and "more)" in str(e.value)
    assert isinstance(e.value.action, Action)
