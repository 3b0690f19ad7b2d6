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
"""

from typing import Iterable, List, Set

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


def _shift(a: Action, s: int, m: int) -> Action:
    return a if a.kind == OPT_STEP or a.mb < 0 else Action(a.kind, a.module, a.stage, a.mb + s * m, a.chunk, a.peer)


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
