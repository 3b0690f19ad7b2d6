"""Several optimizer steps as one action list per node, so work can cross a step boundary.

Step s's microbatch j is microbatch s*m + j of the returned Schedule, and every node's list holds
one OPT_STEP per step (a global barrier in the simulator and in the executor). With `lead` k > 0, a
node that trains nothing (a frozen_all encoder, or a frozen encoder's stages before its projection)
computes the first k forwards of step s+1 before step s's OPT_STEP: its weights never change, so
the result is the same, and the language pipeline finds those inputs waiting when its step starts
instead of idling through the encoder's latency (its warm-up bubble). Sends of those forwards to
a node that trains are posted after the barrier (the barrier completes this rank's sends, and
that receiver posts them only in its next step); sends to another leading node go before it.

`validate` checks single steps (one OPT_STEP, last); these lists are checked by `simulate`, which
raises on any deadlock.

A trainer that runs one optimizer step per call takes the same lists cut at each OPT_STEP
(`step_lists`): microbatch ids m..m+k-1 of a call are the next step's 0..k-1, computed ahead and
carried to the next call (train/executor.py).
"""

from typing import Dict, Iterable, List, Set

from mimo_runtime.plan import Plan
from mimo_runtime.schedule.actions import F, OPT_STEP, RECV_F, SEND_F, Action, Node
from mimo_runtime.schedule.generate import build_schedule
from mimo_runtime.schedule.graph import Schedule


def build_steps(plan: Plan, num_microbatches: int, steps: int, kind: str = "1f1b",
                frozen_all: Iterable[str] = (), lead: int = 0, **options) -> Schedule:
    """`steps` consecutive steps of `build_schedule(plan, m, kind, frozen_all, **options)`, with `lead`."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    m = num_microbatches
    if not 0 <= lead <= m:
        raise ValueError(f"lead must be in 0..{m} (microbatches per step), got {lead}")
    one = build_schedule(plan, m, kind, frozen_all, **options)
    leading = {n for n in one.nodes if lead and not one.trains[n] and one.training}
    actions = {node: _node_steps(one, node, steps, lead if node in leading else 0, leading) for node in one.nodes}
    return Schedule(one.kind, m * steps, one.graph, actions, one.trains)


STEP_LISTS = ("plain", "first", "steady", "last")


def step_lists(plan: Plan, num_microbatches: int, kind: str = "1f1b", frozen_all: Iterable[str] = (),
               lead: int = 0, **options) -> Dict[str, Schedule]:
    """The single-step pieces of `build_steps(..., steps=3, lead=lead)`, renumbered to step 0.

    "first" carries nothing in and computes the next step's first `lead` forwards, "steady" takes
    them from the previous call and computes the next ones, "last" takes them and computes none;
    "plain" is `build_schedule` (no lead). first, steady..., last is the simulated multi-step list
    (tests/schedule/test_step_lists.py); nodes that do not lead get the plain list in all four.
    """
    m = num_microbatches
    frozen_all = tuple(frozen_all)
    plain = build_schedule(plan, m, kind, frozen_all, **options)
    if not lead or not plain.training:
        return {name: plain for name in STEP_LISTS}
    three = build_steps(plan, m, 3, kind, frozen_all, lead, **options)
    cut = {node: _segments(acts) for node, acts in three.actions.items()}
    out = {"plain": plain}
    for s, name in enumerate(STEP_LISTS[1:]):
        actions = {node: [_shift(a, -s, m) for a in segments[s]] for node, segments in cut.items()}
        out[name] = Schedule(plain.kind, m, plain.graph, actions, plain.trains)
    return out


def _segments(actions: List[Action]) -> List[List[Action]]:
    """A multi-step list cut after each OPT_STEP."""
    out: List[List[Action]] = [[]]
    for a in actions:
        out[-1].append(a)
        if a.kind == OPT_STEP:
            out.append([])
    return out[:-1]


def _shift(a: Action, s: int, m: int) -> Action:
    return a if a.kind == OPT_STEP or a.mb < 0 else Action(a.kind, a.module, a.stage, a.mb + s * m, a.chunk, a.peer,
                                                                 a.peer_chunk)


def _node_steps(one: Schedule, node: Node, steps: int, lead: int, leading: Set[Node]) -> List[Action]:
    m = one.num_microbatches
    body = [a for a in one.actions[node] if a.kind != OPT_STEP]
    opt = [a for a in one.actions[node] if a.kind == OPT_STEP]
    if not lead:
        return [_shift(a, s, m) for s in range(steps) for a in body + opt]
    early = [a for a in body if a.mb < lead and (a.kind in (RECV_F, F) or a.peer in leading)]
    late = [a for a in body if a.mb < lead and a not in early]  # sends to nodes that train
    rest = [a for a in body if a.mb >= lead]
    out: List[Action] = []
    for s in range(steps):
        out += [_shift(a, 0, m) for a in body] if s == 0 else [_shift(a, s, m) for a in late + rest]
        if s + 1 < steps:
            out += [_shift(a, s + 1, m) for a in early]
        out += opt
    return out
