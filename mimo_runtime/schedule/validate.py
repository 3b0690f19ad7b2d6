"""Validator: static checks on every list, send/receive matching, then deadlock freedom by simulation.

The executor runs the lists as given, so anything it would trip over is caught here first, named by
stage node, ranks and action, with the grid printed around the offending action. The simulation
matches messages by (microbatch, channel); the channel-order check makes that equal to the
executor's untagged, posting-order matching when two nodes share one channel per direction (1F1B,
GPipe). Interleaved lists put several channels between the same two ranks (a stage's chunks, and the
wrap from the last stage to the first), whose messages a rank may receive in another order than
its peer sends them: they must run as lowered programs (schedule/lower.py), which post both ends of
every message in one order, not action by action.
"""

from typing import Dict, List, Set, Tuple

from mimo_runtime.schedule.actions import (
    B, F, KINDS, NO_MICROBATCH, OPT_STEP, RECV_B, RECV_F, RECV_KINDS, REDUCE_GRADS, SEND_B, SEND_F, SEND_KINDS,
    STEP_KINDS, W, Action, Node)
from mimo_runtime.schedule.errors import ScheduleError, error_at
from mimo_runtime.schedule.graph import Schedule, node_name
from mimo_runtime.schedule.simulate import SimResult, rendezvous_deadlock, simulate

_BACKWARD_KINDS = (B, W, RECV_B, SEND_B, REDUCE_GRADS, OPT_STEP)


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
    """Check one list on its own: kinds, chunks, peers, microbatch flow, step actions."""
    m, graph, training = schedule.num_microbatches, schedule.graph, schedule.training
    name, stage = node
    chunks = graph.num_chunks(node)
    trains = schedule.trains[node] and training
    split = schedule.kind == "zero_bubble"  # every B leaves its weight gradient to a W
    acts = schedule.actions[node]
    seen: Dict[tuple, int] = {}
    done: Dict[str, Set[Tuple[int, int]]] = {F: set(), B: set(), W: set()}
    reduced = False

    def fail(k: int, problem: str) -> ScheduleError:
        return error_at(schedule, node, k, problem)

    for k, a in enumerate(acts):
        kind, mb, peer, chunk = a.kind, a.mb, a.peer, a.chunk
        if a.module != name or a.stage != stage:
            raise fail(k, f"the action is for node {node_name(a.node)} but sits in {node_name(node)}'s list")
        key = (kind, mb, chunk, peer, a.peer_chunk)
        if key in seen:
            raise fail(k, f"duplicate of action #{seen[key]}")
        seen[key] = k
        if kind not in STEP_KINDS and not 0 <= chunk < chunks:
            raise fail(k, f"chunk {chunk} is outside 0..{chunks - 1} (the node holds {chunks} virtual stages)")
        if kind in SEND_KINDS or kind in RECV_KINDS:
            allowed = graph.outputs(node, chunk) if kind in (SEND_F, RECV_B) else graph.inputs(node, chunk)
            if (peer, a.peer_chunk) not in allowed:
                names = ", ".join(_chunk_name(p, c) for p, c in sorted(allowed)) or "none"
                raise fail(k, f"peer {_chunk_name(peer, a.peer_chunk) if peer else None} is not a neighbour of "
                              f"chunk {chunk} in this direction (allowed: {names})")
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
        if kind == W and not split:
            raise fail(k, f"a {schedule.kind} schedule runs each backward whole; W belongs to zero_bubble")
        inputs = graph.inputs(node, chunk) if kind == F else graph.outputs(node, chunk)
        problem = _order_problem(kind, mb, chunk, seen, done, inputs, trains, m, chunks, split)
        if problem:
            raise fail(k, problem)
        if kind == REDUCE_GRADS:
            reduced = True
        elif kind == OPT_STEP and k != len(acts) - 1:
            raise fail(k, "OPT_STEP must be the node's last action (its all-reduce spans every rank)")
    end = len(acts)
    every = {(c, j) for c in range(chunks) for j in range(m)}
    for kind, needed in ((F, True), (B, trains), (W, trains and split)):
        if needed and len(done[kind]) < len(every):
            c, j = min(every - done[kind])
            raise fail(end, f"{_task(kind, c, j)} never runs (every chunk runs every microbatch"
                            f"{' forward' if kind == F else '' if kind == B else ', and each B its W'})")
    if trains and not reduced:
        raise fail(end, "REDUCE_GRADS is missing after the last backward of a node that trains")
    if training and (not acts or acts[-1].kind != OPT_STEP):
        raise fail(end, "a training schedule ends every node with exactly one OPT_STEP")


def _chunk_name(node: Node, chunk: int) -> str:
    return f"{node_name(node)}{f'c{chunk}' if chunk else ''}"


def _task(kind: str, chunk: int, mb: int) -> str:
    return f"{f'c{chunk}:' if chunk else ''}{kind}{mb}"


def _order_problem(kind: str, mb: int, chunk: int, seen: Dict[tuple, int], done: Dict[str, Set[Tuple[int, int]]],
                   inputs, trains: bool, m: int, chunks: int, split: bool) -> str:
    """Each (chunk, microbatch) flows RECV_F -> F -> SEND_F and RECV_B -> B -> SEND_B, then W ('' if fine)."""
    me = (chunk, mb)
    if kind in (F, B, W):
        if kind != F and not trains:
            return "this node runs no backward (frozen, or a forward-only schedule)"
        if kind == B and me not in done[F]:
            return f"{_task(B, chunk, mb)} before {_task(F, chunk, mb)}"
        if kind == W and me not in done[B]:
            return f"{_task(W, chunk, mb)} before {_task(B, chunk, mb)} (the weight gradient needs B's output gradient)"
        if me in done[kind]:
            return f"{_task(kind, chunk, mb)} runs twice"
        if kind != W:
            recv = RECV_F if kind == F else RECV_B
            for peer, pc in sorted(inputs):
                if (recv, mb, chunk, peer, pc) not in seen:
                    return (f"{_task(kind, chunk, mb)} runs before {recv}{mb}<{_chunk_name(peer, pc)} "
                            f"(its input from {_chunk_name(peer, pc)})")
        done[kind].add(me)
    elif kind in RECV_KINDS:
        after = F if kind == RECV_F else B
        if me in done[after]:
            return f"arrives after {_task(after, chunk, mb)} already ran"
    elif kind in SEND_KINDS:
        after = F if kind == SEND_F else B
        if me not in done[after]:
            return f"sends microbatch {mb} before {_task(after, chunk, mb)} produced it"
    elif kind == REDUCE_GRADS:
        if not trains:
            return "this node trains nothing, so it has no gradients to reduce"
        last = W if split else B
        if len(done[last]) < m * chunks:
            return (f"gradients are reduced before the last {'weight gradient' if split else 'backward'} "
                    f"({len(done[last])} of {m * chunks} done)")
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
                sends.setdefault((a.kind[-1], node, a.chunk, a.peer, a.peer_chunk), []).append((a.mb, node, k))
            elif a.kind in RECV_KINDS:
                recvs.setdefault((a.kind[-1], a.peer, a.peer_chunk, node, a.chunk), []).append((a.mb, node, k))
    for channel in list(sends) + [c for c in recvs if c not in sends]:
        direction, src, sc, dst, dc = channel
        out, inn = sends.get(channel, []), recvs.get(channel, [])
        for mine, theirs, kind, peer, pc, mc in ((out, inn, "RECV_", dst, dc, sc), (inn, out, "SEND_", src, sc, dc)):
            lacking = {mb for mb, _, _ in mine} - {mb for mb, _, _ in theirs}
            if lacking:
                mb, node, k = next(x for x in mine if x[0] in lacking)
                expected = Action(kind + direction, peer[0], peer[1], mb, pc, node, mc)
                what = "receive" if kind == "RECV_" else "send"
                raise error_at(schedule, node, k, f"no matching {what}: {expected} is not in {node_name(peer)}'s list")
        for i, ((sent, _, _), (got, node, k)) in enumerate(zip(out, inn)):
            if sent != got:
                raise error_at(schedule, node, k, f"receive #{i} from {node_name(src)} is out of order: "
                                                  f"{node_name(src)} sends SEND_{direction}{sent} as its message #{i} "
                                                  f"here, and untagged point-to-point messages between two ranks "
                                                  f"are matched in posting order")
