"""Rank-level meaning of the schedule's messages, for the lowering (schedule/lower.py). Pure: no torch.

A node-level send or receive is one op to the same (tp, cp, dp) coordinates on the neighbouring
stage within a module, and one op per bridge route (routes.py: fan-in, fan-out, TP/CP replication)
between modules; a route from a rank to itself is a local hand-over, no op. A colocated forward
(backward) with an encoder laid out unlike the language model posts one group per such encoder: this
rank's sends and receives of the exchange (comm/exchange.py), backward in reverse encoder order, the
order autograd runs the exchanges in.
"""

from typing import Dict, List, Sequence

from mimo_runtime.comm.routes import backward_routes, forward_routes
from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, ModuleLayout, Plan
from mimo_runtime.schedule.actions import B, F, RECV_B, RECV_F, SEND_B, SEND_F, Action, Node
from mimo_runtime.schedule.graph import Schedule
from mimo_runtime.schedule.lower import RECV, SEND, Op, Program, cut_steps, lower
from mimo_runtime.schedule.steps import STEP_LISTS, _shift, build_steps


class RankOps:
    def __init__(self, plan: Plan):
        self.plan = plan
        global_mb = plan.micro_batch * plan.language.dp
        self.fwd = {e: forward_routes(plan.modules[e], plan.language, global_mb) for e, _ in plan.edges}
        self.bwd = {e: backward_routes(plan.modules[e], plan.language, global_mb) for e, _ in plan.edges}
        lang = plan.modules[LANG]
        self.relaid = [n for n, m in plan.encoders.items() if plan.layout is ModuleLayout.COLOCATED
                       and (m.tp, m.cp, m.dp) != (lang.tp, lang.cp, lang.dp)]

    def expand(self, a: Action, rank: int) -> List[Op]:
        """The ops of node-level send or receive `a` on `rank`, in the order the executor posts them."""
        if a.peer[0] == a.module:
            m = self.plan.modules[a.module]
            c = m.coords(rank)
            peer = m.rank(tp=c.tp, cp=c.cp, dp=c.dp, pp=a.peer[1])
            return [(SEND if a.kind in (SEND_F, SEND_B) else RECV, peer)]
        enc = a.module if a.kind in (SEND_F, RECV_B) else a.peer[0]
        routes = self.fwd[enc] if a.kind in (SEND_F, RECV_F) else self.bwd[enc]
        if a.kind in (SEND_F, SEND_B):
            return [(SEND, r.dst) for r in routes if r.src == rank and r.dst != rank]
        return [(RECV, r.src) for r in routes if r.dst == rank and r.src != rank]

    def inner(self, a: Action, rank: int) -> List[Sequence[Op]]:
        if a.kind not in (F, B) or not self.relaid:
            return []
        encoders = self.relaid if a.kind == F else list(reversed(self.relaid))
        routes = self.fwd if a.kind == F else self.bwd
        return [[(SEND, r.dst) for r in routes[e] if r.src == rank and r.dst != rank]
                + [(RECV, r.src) for r in routes[e] if r.dst == rank and r.src != rank] for e in encoders]


def rank_nodes(schedule: Schedule, plan: Plan) -> Dict[int, Node]:
    return {r: schedule.node_of(plan, r) for r in range(plan.world_size)}


def rank_chunks(schedule: Schedule, plan: Plan) -> Dict[int, int]:
    """Model chunks of each rank's node (`check_nccl`'s `chunks`)."""
    return {r: schedule.graph.num_chunks(node) for r, node in rank_nodes(schedule, plan).items()}


def lower_plan(schedule: Schedule, plan: Plan) -> Dict[int, Program]:
    """Every rank's program of `schedule` (what the executor posts on that rank)."""
    ops = RankOps(plan)
    return lower(schedule, rank_nodes(schedule, plan), ops.expand, ops.inner)


def step_programs(plan: Plan, num_microbatches: int, kind: str = "1f1b", frozen_all=(), lead: int = 0,
                  **options) -> Dict[str, Dict[int, Program]]:
    """The programs of `schedule.step_lists`' four lists (plain, first, steady, last), every rank.

    The lead pieces are cut from the lowering of the three-step list at its barriers, so consecutive
    calls post what one lowered multi-step list posts; no message crosses a barrier (the lowering puts
    both ends of a message at its receive time, on the same side of every barrier).
    """
    from mimo_runtime.schedule.generate import build_schedule

    m = num_microbatches
    plain = lower_plan(build_schedule(plan, m, kind, tuple(frozen_all), **options), plan)
    if not lead or kind == "forward":
        return {name: plain for name in STEP_LISTS}
    three = lower_plan(build_steps(plan, m, 3, kind, tuple(frozen_all), lead, **options), plan)
    out = {"plain": plain}
    for s, name in enumerate(STEP_LISTS[1:]):
        out[name] = {r: [_shift_item(it, -s, m) for it in cut_steps(prog)[s]] for r, prog in three.items()}
    return out


def _shift_item(item, s: int, m: int):
    if isinstance(item, Action):
        return _shift(item, s, m)
    return type(item)(tuple((_shift(a, s, m), ops) for a, ops in item.messages),
                      None if item.within is None else _shift(item.within, s, m))
