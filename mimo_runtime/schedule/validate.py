"""Validator: static checks on every list, send/receive matching, then deadlock freedom by simulation.

The executor runs the lists as given, so anything it would trip over is caught here first, named by
stage node, ranks and action, with the grid printed around the offending action. The simulation
matches messages by (microbatch, channel); the channel-order check makes that equal to the
executor's untagged, posting-order matching.
"""

from typing import Dict, List, Set, Tuple

from mimo_runtime.schedule.actions import (
    B, F, KINDS, NO_MICROBATCH, OPT_STEP, RECV_B, RECV_F, RECV_KINDS, REDUCE_GRADS, SEND_B, SEND_F, SEND_KINDS,
    STEP_KINDS, Action, Node)
from mimo_runtime.schedule.errors import ScheduleError, error_at
from mimo_runtime.schedule.graph import Schedule, node_name
from mimo_runtime.schedule.simulate import SimResult, rendezvous_deadlock, simulate

_BACKWARD_KINDS = (B, RECV_B, SEND_B, REDUCE_GRADS, OPT_STEP)


def validate(schedule: Schedule, rendezvous: bool = False) -> SimResult:
    """Raise ScheduleError for the first broken action; return the unit-cost simulation otherwise.

    Deadlock freedom is proven for the executor's semantics (asynchronous sends, blocking receives);
    `rendezvous=True` also demands that the lists run with blocking sends.
    """
    missing = [n for n in schedule.nodes if n not in schedule.actions]
    if missing:
        raise ScheduleError(f"no action list for stage node {node_name(missing[0])}")
    for node in schedule.nodes:
        _check_node(schedule, node)
    _check_channels(schedule)
    result = simulate(schedule)
    if rendezvous:
        error = rendezvous_deadlock(schedule)
        if error is not None:
            raise error
    return result


def _check_node(schedule: Schedule, node: Node) -> None:
    """Check one list on its own: kinds, peers, microbatch flow, step actions."""
    m, graph, training = schedule.num_microbatches, schedule.graph, schedule.training
    name, stage = node
    up, down = set(graph.upstream[node]), set(graph.downstream[node])
    peers_of = {SEND_F: down, RECV_B: down, RECV_F: up, SEND_B: up}
    trains = schedule.trains[node] and training
    acts = schedule.actions[node]
    seen: Dict[tuple, int] = {}
    done: Dict[str, Set[int]] = {F: set(), B: set()}
    reduced = False

    def fail(k: int, problem: str) -> ScheduleError:
        return error_at(schedule, node, k, problem)

    for k, a in enumerate(acts):
        kind, mb, peer = a.kind, a.mb, a.peer
        if a.module != name or a.stage != stage:
            raise fail(k, f"the action is for node {node_name(a.node)} but sits in {node_name(node)}'s list")
        key = (kind, mb, a.chunk, peer)
        if key in seen:
            raise fail(k, f"duplicate of action #{seen[key]}")
        seen[key] = k
        if kind in peers_of:
            if peer not in peers_of[kind]:
                names = ", ".join(node_name(p) for p in sorted(peers_of[kind])) or "none"
                raise fail(k, f"peer {peer} is not a neighbour in this direction (allowed: {names})")
        elif kind in STEP_KINDS:
            if mb != NO_MICROBATCH or peer is not None:
                raise fail(k, f"{kind} takes no microbatch and no peer")
        elif kind not in KINDS:
            raise fail(k, f"unknown kind {kind!r}")
        elif peer is not None:
            raise fail(k, f"{kind} takes no peer")
        if kind not in STEP_KINDS and not 0 <= mb < m:
            raise fail(k, f"microbatch {mb} is outside 0..{m - 1}")
        if not training and kind in _BACKWARD_KINDS:
            raise fail(k, f"a forward-only schedule has no {kind}")
        problem = _order_problem(kind, mb, a.chunk, seen, done, up if kind == F else down, trains, m)
        if problem:
            raise fail(k, problem)
        if kind == REDUCE_GRADS:
            reduced = True
        elif kind == OPT_STEP and k != len(acts) - 1:
            raise fail(k, "OPT_STEP must be the node's last action (its all-reduce spans every rank)")
    end = len(acts)
    if len(done[F]) < m:
        raise fail(end, f"F{min(set(range(m)) - done[F])} never runs (every node runs every microbatch forward)")
    if trains and len(done[B]) < m:
        raise fail(end, f"B{min(set(range(m)) - done[B])} never runs on a node that trains")
    if trains and not reduced:
        raise fail(end, "REDUCE_GRADS is missing after the last backward of a node that trains")
    if training and (not acts or acts[-1].kind != OPT_STEP):
        raise fail(end, "a training schedule ends every node with exactly one OPT_STEP")


def _order_problem(kind: str, mb: int, chunk: int, seen: Dict[tuple, int], done: Dict[str, Set[int]],
                   inputs: Set[Node], trains: bool, m: int) -> str:
    """Each microbatch flows RECV_F -> F -> SEND_F and RECV_B -> B -> SEND_B on a node ('' if fine)."""
    if kind == F or kind == B:
        if kind == B and not trains:
            return "this node runs no backward (frozen, or a forward-only schedule)"
        if kind == B and mb not in done[F]:
            return f"B{mb} before F{mb}"
        recv = RECV_F if kind == F else RECV_B
        for peer in sorted(inputs):
            if (recv, mb, chunk, peer) not in seen:
                return f"{kind}{mb} runs before {recv}{mb}<{node_name(peer)} (its input from {node_name(peer)})"
        done[kind].add(mb)
    elif kind in RECV_KINDS:
        after = F if kind == RECV_F else B
        if mb in done[after]:
            return f"arrives after {after}{mb} already ran"
    elif kind in SEND_KINDS:
        after = F if kind == SEND_F else B
        if mb not in done[after]:
            return f"sends microbatch {mb} before {after}{mb} produced it"
    elif kind == REDUCE_GRADS:
        if not trains:
            return "this node trains nothing, so it has no gradients to reduce"
        if len(done[B]) < m:
            return f"gradients are reduced before the last backward ({len(done[B])} of {m} done)"
    return ""


def _check_channels(schedule: Schedule) -> None:
    """Every send has one receive, posted in the same order on its channel.

    The comm layer sends untagged point-to-point messages, which torch.distributed matches first-come
    first-served between two ranks: a receive posted out of order would silently take another
    microbatch's tensors, so order on each (sender node -> receiver node) channel must agree.
    """
    sends: Dict[tuple, List[Tuple[int, Node, int]]] = {}
    recvs: Dict[tuple, List[Tuple[int, Node, int]]] = {}
    for node in schedule.nodes:
        for k, a in enumerate(schedule.actions[node]):
            if a.kind in SEND_KINDS:
                sends.setdefault((a.kind[-1], a.chunk, node, a.peer), []).append((a.mb, node, k))
            elif a.kind in RECV_KINDS:
                recvs.setdefault((a.kind[-1], a.chunk, a.peer, node), []).append((a.mb, node, k))
    for channel in list(sends) + [c for c in recvs if c not in sends]:
        direction, chunk, src, dst = channel
        out, inn = sends.get(channel, []), recvs.get(channel, [])
        for mine, theirs, kind, peer in ((out, inn, "RECV_", dst), (inn, out, "SEND_", src)):
            lacking = {mb for mb, _, _ in mine} - {mb for mb, _, _ in theirs}
            if lacking:
                mb, node, k = next(x for x in mine if x[0] in lacking)
                expected = Action(kind + direction, peer[0], peer[1], mb, chunk, node)
                what = "receive" if kind == "RECV_" else "send"
                raise error_at(schedule, node, k, f"no matching {what}: {expected} is not in {node_name(peer)}'s list")
        for i, ((sent, _, _), (got, node, k)) in enumerate(zip(out, inn)):
            if sent != got:
                raise error_at(schedule, node, k, f"receive #{i} from {node_name(src)} is out of order: "
                                                  f"{node_name(src)} sends SEND_{direction}{sent} as its message #{i} "
                                                  f"here, and untagged point-to-point messages between two ranks "
                                                  f"are matched in posting order")
