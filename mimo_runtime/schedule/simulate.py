"""Simulator: run the action lists under the executor's semantics and time them.

Semantics (the executor's): a node runs its list in order; sends are posted asynchronously and never
block; a receive blocks until its message has arrived (send time + latency + bytes / bandwidth);
OPT_STEP is a global barrier (its grad-norm all-reduce spans every rank). Compute costs come per
(module, stage) and are a stage's work per microbatch: a node with V model chunks spends 1/V of it
on each chunk's action, and where a zero-bubble list splits a backward, B and W share it (`Costs.task`). Links are not modelled as shared (no contention), which keeps the simulation a
single pass over the lists: each action's time depends only on its own node's clock and on the
message it waits for, so nodes are advanced in any order until each blocks.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

from mimo_runtime.schedule.actions import (
    B, F, OPT_STEP, RECV_B, RECV_F, REDUCE_GRADS, SEND_B, SEND_F, SEND_KINDS, W, Action, Node)
from mimo_runtime.schedule.errors import ScheduleError, error_at
from mimo_runtime.schedule.graph import Schedule, node_name

Cost = Union[float, Mapping]  # one number for every node, or {(module, stage) or module: seconds}

_COMPUTE, _SEND, _RECV, _BARRIER = 0, 1, 2, 3


@dataclass(frozen=True)
class Costs:
    forward: Cost = 1.0
    backward: Cost = 1.0  # the whole backward (input and weight gradients)
    weight: Optional[Cost] = None  # W, the weight-gradient part of it a zero-bubble list splits off; None: half
    reduce_grads: Cost = 0.0
    opt_step: Cost = 0.0
    latency: float = 0.0
    bandwidth: float = math.inf  # bytes per time unit
    # bytes sent along a DAG edge (activations forward, their gradients back), keyed by
    # (upstream node, downstream node) or (upstream module, downstream module); or a callable of the two nodes
    bytes: Union[None, Mapping, Callable[[Node, Node], float]] = None

    def compute(self, kind: str, node: Node) -> float:
        if kind == W:
            return self._weight(node)
        table = {F: self.forward, B: self.backward, REDUCE_GRADS: self.reduce_grads, OPT_STEP: self.opt_step}[kind]
        return float(_lookup(table, (node, node[0]), f"{kind} cost of {node_name(node)}"))

    def _weight(self, node: Node) -> float:
        if self.weight is None:
            return self.compute(B, node) / 2
        return float(_lookup(self.weight, (node, node[0]), f"W cost of {node_name(node)}"))

    def task(self, kind: str, node: Node, chunks: int = 1, split: bool = False) -> float:
        """One action's time on `node`. The costs are a stage's work per microbatch: with `chunks` model
        chunks each chunk's F, B or W takes its share, and in a list that splits backwards (`split`)
        B is the backward less its W."""
        cost = self.compute(kind, node)
        if kind == B and split:
            cost -= self._weight(node)
        return cost / chunks if kind in (F, B, W) else cost

    def comm(self, upstream: Node, downstream: Node) -> float:
        if self.bytes is None:
            size = 0.0
        elif callable(self.bytes):
            size = self.bytes(upstream, downstream)
        else:
            size = _lookup(self.bytes, ((upstream, downstream), (upstream[0], downstream[0])),
                           f"bytes on edge {node_name(upstream)} -> {node_name(downstream)}")
        return self.latency + (size / self.bandwidth if size else 0.0)


def _lookup(table, keys, what: str) -> float:
    if not isinstance(table, Mapping):
        return table
    for key in keys:
        if key in table:
            return table[key]
    raise ValueError(f"costs: no {what} (tried keys {', '.join(map(repr, keys))})")


@dataclass(frozen=True)
class SimResult:
    makespan: float
    busy: Dict[Node, float]  # F, B, W, REDUCE_GRADS and OPT_STEP time; waiting is idle
    bubble_fraction: float  # idle share of nodes x makespan
    peak_inflight: Dict[Node, int]  # most forwards awaiting their backward (their W in zero bubble; 0 without)
    start: Dict[Node, List[float]]  # per action, parallel to schedule.actions[node]
    end: Dict[Node, List[float]]


@dataclass
class _Program:
    ops: List[List[Tuple[int, int, float]]]  # per node: (code, message id, duration or transit time)
    slots: List[tuple]  # message id // m -> (direction, src node, src chunk, dst node, dst chunk)
    m: int
    send_at: List[Optional[Tuple[int, int]]]  # message id -> (node index, action index) of its send

    def key(self, mid: int) -> tuple:
        """(direction, mb, src node, src chunk, dst node, dst chunk) of a message."""
        direction, src, sc, dst, dc = self.slots[mid // self.m]
        return direction, mid % self.m, src, sc, dst, dc


def simulate(schedule: Schedule, costs: Optional[Costs] = None) -> SimResult:
    """Time the lists; raises ScheduleError if they deadlock (run `validate` for the static checks)."""
    prog = _compile(schedule, costs or Costs())
    n = len(schedule.nodes)
    pc, clock, busy = [0] * n, [0.0] * n, [0.0] * n
    start = [[0.0] * len(ops) for ops in prog.ops]
    end = [[0.0] * len(ops) for ops in prog.ops]
    arrival: List[Optional[float]] = [None] * len(prog.send_at)
    waiting: Dict[int, int] = {}
    ready = list(range(n - 1, -1, -1))
    while True:
        while ready:
            i = ready.pop()
            ops, k, t, b, st, en = prog.ops[i], pc[i], clock[i], busy[i], start[i], end[i]
            stop = len(ops)
            while k < stop:
                code, mid, cost = ops[k]
                st[k] = t
                if code == _COMPUTE:
                    t += cost
                    b += cost
                elif code == _SEND:
                    arrival[mid] = t + cost
                    w = waiting.pop(mid, None)
                    if w is not None:
                        ready.append(w)
                elif code == _RECV:
                    a = arrival[mid]
                    if a is None:
                        waiting[mid] = i
                        break
                    if a > t:
                        t = a
                else:
                    break
                en[k] = t
                k += 1
            pc[i], clock[i], busy[i] = k, t, b
        barrier = [i for i in range(n) if pc[i] < len(prog.ops[i]) and prog.ops[i][pc[i]][0] == _BARRIER]
        if len(barrier) < n:  # a node blocked or finished elsewhere never joins the all-reduce
            break
        # Everyone reached the optimizer step: its all-reduce starts when the last node arrives.
        go = max(clock[i] for i in barrier)
        for i in barrier:
            cost = prog.ops[i][pc[i]][2]
            end[i][pc[i]] = clock[i] = go + cost
            busy[i] += cost
            pc[i] += 1
            ready.append(i)
    if any(pc[i] < len(prog.ops[i]) for i in range(n)):
        raise _deadlock(schedule, prog, pc, "asynchronous sends and blocking receives")
    makespan = max(clock, default=0.0)
    idle = sum(makespan - b for b in busy)
    nodes = schedule.nodes
    return SimResult(makespan, dict(zip(nodes, busy)), idle / (n * makespan) if makespan > 0 else 0.0,
                     {node: _peak_inflight(schedule.actions[node]) for node in nodes},
                     dict(zip(nodes, start)), dict(zip(nodes, end)))


def rendezvous_deadlock(schedule: Schedule) -> Optional[ScheduleError]:
    """The error if the lists deadlock when a send also blocks until its receive is posted, else None.

    The executor posts sends asynchronously, so this stricter mode is informational: it says whether
    the lists would also run with blocking (unbuffered) sends.
    """
    prog = _compile(schedule, Costs())
    index = {node: i for i, node in enumerate(schedule.nodes)}
    n = len(prog.ops)
    pc = [0] * n
    blocked: Dict[int, int] = {}
    ready = list(range(n - 1, -1, -1))
    while True:
        while ready:
            i = ready.pop()
            ops, k = prog.ops[i], pc[i]
            while k < len(ops):
                code, mid, _ = ops[k]
                if code == _COMPUTE:
                    k += 1
                    continue
                if code == _BARRIER:
                    break
                _, _, src, _, dst, _ = prog.key(mid)
                partner = index.get(dst if code == _SEND else src, -1)
                if partner != i and blocked.get(partner) == mid:
                    del blocked[partner]
                    pc[partner] += 1
                    ready.append(partner)
                    k += 1
                    continue
                blocked[i] = mid
                break
            pc[i] = k
        barrier = [i for i in range(n) if pc[i] < len(prog.ops[i]) and prog.ops[i][pc[i]][0] == _BARRIER]
        if len(barrier) < n:
            break
        for i in barrier:
            pc[i] += 1
            ready.append(i)
    if any(pc[i] < len(prog.ops[i]) for i in range(n)):
        return _deadlock(schedule, prog, pc, "blocking (rendezvous) sends and receives")
    return None


def _compile(schedule: Schedule, costs: Costs) -> _Program:
    """Per node (code, message id, time) triples; message id = edge slot * m + microbatch.

    Slot ids avoid hashing a key per action: this pass dominates simulate() at p=64, m=1024.
    """
    m = schedule.num_microbatches
    slot_of: Dict[tuple, int] = {}
    slots: List[tuple] = []  # slot -> (direction, src node, src chunk, dst node, dst chunk)
    transit: List[float] = []
    send_at: List[Optional[Tuple[int, int]]] = []
    all_ops = []
    for ni, node in enumerate(schedule.nodes):
        chunks, split = schedule.graph.num_chunks(node), any(a.kind == W for a in schedule.actions[node])
        fixed = {kind: (_COMPUTE, -1, costs.task(kind, node, chunks, split)) for kind in (F, B, W, REDUCE_GRADS)}
        fixed[OPT_STEP] = (_BARRIER, -1, costs.compute(OPT_STEP, node))
        local: Dict[tuple, Tuple[int, int]] = {}  # (kind, chunk, peer, peer chunk) -> (code, slot base)
        ops = []
        add = ops.append
        for k, a in enumerate(schedule.actions[node]):
            op = fixed.get(a.kind)
            if op is None:
                lk = (a.kind, a.chunk, a.peer, a.peer_chunk)
                code_base = local.get(lk)
                if code_base is None:
                    code_base = local[lk] = _slot(a, node, m, slot_of, slots, transit, send_at, costs)
                code, base = code_base
                mb = a.mb
                if not 0 <= mb < m:
                    raise error_at(schedule, node, k, f"microbatch {mb} is outside 0..{m - 1}")
                mid = base + mb
                if code == _SEND:
                    send_at[mid] = (ni, k)
                op = (code, mid, transit[mid // m])
            add(op)
        all_ops.append(ops)
    return _Program(all_ops, slots, m, send_at)


def _slot(a: Action, node: Node, m: int, slot_of, slots, transit, send_at, costs: Costs) -> Tuple[int, int]:
    send = a.kind in SEND_KINDS
    src, dst = (node, a.peer) if send else (a.peer, node)
    sc, dc = (a.chunk, a.peer_chunk) if send else (a.peer_chunk, a.chunk)
    direction = a.kind[-1]
    key = (direction, src, sc, dst, dc)
    if key not in slot_of:
        slot_of[key] = len(slots)
        slots.append(key)
        transit.append(costs.comm(src, dst) if direction == "F" else costs.comm(dst, src))
        send_at.extend([None] * m)
    return (_SEND if send else _RECV), slot_of[key] * m


def _peak_inflight(actions: List[Action]) -> int:
    """A forward's activations live until its backward, or until its W where the backward is split."""
    live = peak = 0
    release = W if any(a.kind == W for a in actions) else B
    has_backward = False
    for a in actions:
        if a.kind == F:
            live += 1
            peak = max(peak, live)
        elif a.kind == release:
            live -= 1
            has_backward = True
    return peak if has_backward else 0


def _deadlock(schedule: Schedule, prog: _Program, pc: List[int], semantics: str) -> ScheduleError:
    """Follow who-waits-for-whom from the first stuck node until a cycle or a message never sent."""
    nodes = schedule.nodes
    stuck = [i for i in range(len(nodes)) if pc[i] < len(prog.ops[i])]
    first = stuck[0]
    lines = [f"deadlock with {semantics}: {len(stuck)} of {len(nodes)} stage nodes cannot finish"]
    seen, i = set(), first
    while True:
        seen.add(i)
        node, k = nodes[i], pc[i]
        action = schedule.actions[node][k]
        code, mid, _ = prog.ops[i][k]
        if code == _BARRIER:
            absent = [node_name(nodes[j]) for j in stuck if prog.ops[j][pc[j]][0] != _BARRIER]
            absent += [node_name(nodes[j]) for j in range(len(nodes)) if j not in stuck]
            lines.append(f"  {action} waits for every node at OPT_STEP; never there: {', '.join(absent)}")
            break
        direction, mb, src, sc, dst, dc = prog.key(mid)
        if code == _SEND:
            other = Action(RECV_F if direction == "F" else RECV_B, dst[0], dst[1], mb, dc, src, sc)
            pos = _position(schedule, dst, other)
        else:
            other = Action(SEND_F if direction == "F" else SEND_B, src[0], src[1], mb, sc, dst, dc)
            pos = prog.send_at[mid]
            pos = (nodes[pos[0]], pos[1]) if pos is not None else None
        if pos is None:
            lines.append(f"  {action} waits for {other}, which is in no list")
            break
        j = nodes.index(pos[0])
        lines.append(f"  {action} waits for {other} (#{pos[1]} of {node_name(pos[0])}), but "
                     f"{node_name(pos[0])} stops at #{pc[j]} {_at(schedule, pos[0], pc[j])}")
        if j in seen:
            lines.append("  (a cycle: none of these nodes can move)")
            break
        i = j
    marks = {nodes[j]: pc[j] for j in stuck}
    return error_at(schedule, nodes[first], pc[first], "\n".join(lines), marks)


def _position(schedule: Schedule, node: Node, action: Action) -> Optional[Tuple[Node, int]]:
    acts = schedule.actions.get(node, [])
    return next(((node, k) for k, a in enumerate(acts) if a == action), None)


def _at(schedule: Schedule, node: Node, k: int) -> str:
    acts = schedule.actions[node]
    return str(acts[k]) if k < len(acts) else "(its end)"
