"""Interleaved (virtual pipeline) and zero-bubble orders over the module graph.

A node's compute is a sequence of tasks (kind, chunk, mb); `emit` adds the receives before and the
sends after each task, so the chunk-level edges of the StageGraph decide the messages.

Interleaved 1F1B is megatron's `forward_backward_pipelining_with_interleaving`: microbatches run in
groups of pp per chunk (forward: chunks 0..V-1 for each group, backward: V-1..0), a warm-up of
forwards, then one forward and one backward in turn, then the remaining backwards. Megatron's warm-up
on rank r of a chain, 2 * (pp - r - 1) + (V - 1) * pp, is the number of forwards (less the one the
steady state starts with) a rank finishes, running forwards back to back, before the gradient of its
first backward can arrive. `warmups` computes exactly that on the chunk graph with unit costs, which
gives megatron's numbers on a chain and extends them to encoders (interleaved or not) fanning into
the language model.

Zero bubble splits each backward into B (the input gradient, on the critical path) and W (the weight
gradient, which nothing waits for). `insert_weight_grads` keeps a node's F/B order and runs W's
where the node would otherwise wait: it replays the lists with unit costs and, whenever the next F or
B has not got its input yet, runs the oldest deferred W instead. A W also runs before an F that would
exceed the node's peak of live microbatches under the F/B order alone (a microbatch stays live until
its W), so activation memory stays that of 1F1B (ZB-H1 at V=1) or of interleaved 1F1B (V > 1); the
remaining W's fill the cool-down, where 1F1B idles.
"""

import heapq
from collections import deque
from typing import Dict, List, Sequence, Tuple

from mimo_runtime.schedule.actions import B, F, RECV_B, RECV_F, SEND_B, SEND_F, W, Action, Node
from mimo_runtime.schedule.graph import StageGraph

Task = Tuple[str, int, int]  # (F | B | W, chunk, microbatch)


def forward_order(chunks: int, group: int, m: int) -> List[Tuple[int, int]]:
    """(chunk, mb) of a node's forwards: for each group of `group` microbatches, chunks 0..V-1."""
    return [(c, j) for start in range(0, m, group) for c in range(chunks)
            for j in range(start, min(start + group, m))]


def backward_order(chunks: int, group: int, m: int) -> List[Tuple[int, int]]:
    return [(c, j) for start in range(0, m, group) for c in reversed(range(chunks))
            for j in range(start, min(start + group, m))]


def one_f_one_b(fwd: Sequence[Tuple[int, int]], bwd: Sequence[Tuple[int, int]], warmup: int) -> List[Task]:
    """`warmup` forwards, then a forward and a backward in turn, then the remaining backwards."""
    n = len(fwd)
    warmup = min(warmup, n)
    out: List[Task] = [(F, c, j) for c, j in fwd[:warmup]]
    for k in range(n - warmup):
        out.append((F,) + tuple(fwd[warmup + k]))
        out.append((B,) + tuple(bwd[k]))
    out += [(B, c, j) for c, j in bwd[n - warmup:]]
    return out


def warmups(graph: StageGraph, trains: Dict[Node, bool], group: Dict[Node, int], m: int) -> Dict[Node, int]:
    """Per node: forwards before its first backward (see the module docstring)."""
    orders = {n: forward_order(graph.num_chunks(n), group[n], m) for n in graph.nodes}
    done = _forward_times(graph, orders)
    # the first backward's gradient, microbatch 0, walked back from the last virtual stage
    sink = graph.nodes[-1]
    last = (sink, graph.num_chunks(sink) - 1)
    grad_start: Dict[Tuple[Node, int], float] = {last: done[(last[0], last[1], 0)]}
    order = [(n, c) for n in graph.nodes for c in range(graph.num_chunks(n))]
    depth = _virtual_depths(graph, order)
    ends = {}
    for key in sorted(order, key=lambda k: -depth[k]):
        if key != last:
            outs = [ends[o] for o in graph.outputs(*key) if o in ends]
            if not outs:
                continue
            grad_start[key] = max(outs)
        ends[key] = grad_start[key] + 1
    out = {}
    for n in graph.nodes:
        if not trains[n]:
            out[n] = len(orders[n])
            continue
        first = (n, graph.num_chunks(n) - 1)
        arrive = grad_start.get(first, float("inf"))
        count = sum(1 for c, j in orders[n] if done[(n, c, j)] <= arrive)
        need = orders[n].index((first[1], 0))  # its first backward needs its own last chunk's forward
        out[n] = max(count - 1, need, (graph.num_chunks(n) - 1) * group[n])
    return out


def _virtual_depths(graph: StageGraph, keys: List[Tuple[Node, int]]) -> Dict[Tuple[Node, int], int]:
    """Longest chunk-level path from the graph's sources to each (node, chunk): orders the backward walk."""
    depth: Dict[Tuple[Node, int], int] = {}
    remaining = list(keys)
    while remaining:
        later = []
        for key in remaining:
            ins = graph.inputs(*key)
            if all(u in depth for u in ins):
                depth[key] = max((depth[u] + 1 for u in ins), default=0)
            else:
                later.append(key)
        if len(later) == len(remaining):
            raise AssertionError(f"the chunk graph has a cycle through {later[0]}")
        remaining = later
    return depth


def _forward_times(graph: StageGraph, orders: Dict[Node, List[Tuple[int, int]]]) -> Dict[Tuple[Node, int, int], float]:
    """End time of every forward with unit costs, each node running its forward order back to back."""
    done: Dict[Tuple[Node, int, int], float] = {}
    pos = {n: 0 for n in graph.nodes}
    clock = {n: 0.0 for n in graph.nodes}
    progress = True
    while progress:
        progress = False
        for n in graph.nodes:
            order = orders[n]
            while pos[n] < len(order):
                c, j = order[pos[n]]
                ins = [done.get((u, uc, j)) for u, uc in graph.inputs(n, c)]
                if any(t is None for t in ins):
                    break
                t = max([clock[n]] + ins) + 1
                done[(n, c, j)] = clock[n] = t
                pos[n] += 1
                progress = True
    if any(pos[n] < len(orders[n]) for n in graph.nodes):
        raise AssertionError("forward orders deadlock: a chunk waits for a later chunk of the same microbatch")
    return done


def insert_weight_grads(graph: StageGraph, tasks: Dict[Node, List[Task]], caps: Dict[Node, int]) -> Dict[Node, List[Task]]:
    """Each node's F/B tasks with a W after every B, placed by a unit-cost replay (module docstring)."""
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    finished: Dict[Tuple[str, Node, int, int], float] = {}
    pos = [0] * len(nodes)
    clock = [0.0] * len(nodes)
    live = [0] * len(nodes)  # forwards run whose W has not
    pending: List[deque] = [deque() for _ in nodes]
    out: List[List[Task]] = [[] for _ in nodes]
    waiting: Dict[Tuple[str, Node, int, int], List[int]] = {}
    heap = [(0.0, i) for i in range(len(nodes))]
    while heap:
        t, i = heapq.heappop(heap)
        node = nodes[i]
        t = max(t, clock[i])
        todo = tasks[node]
        if pos[i] == len(todo):
            if pending[i]:
                _run_w(out[i], pending[i], live, i)
                clock[i] = t + 1
                heapq.heappush(heap, (clock[i], i))
            continue
        kind, c, j = todo[pos[i]]
        deps = ([(F, u, uc, j) for u, uc in graph.inputs(node, c)] if kind == F
                else [(B, d, dc, j) for d, dc in graph.outputs(node, c)])
        known = [finished.get(d) for d in deps]
        missing = next((d for d, k in zip(deps, known) if k is None), None)
        ready = missing is None and max(known, default=0.0) <= t
        if ready and not (kind == F and pending[i] and live[i] >= caps[node]):
            out[i].append((kind, c, j))
            pos[i] += 1
            clock[i] = t + 1
            finished[(kind, node, c, j)] = clock[i]
            if kind == F:
                live[i] += 1
            elif kind == B:
                pending[i].append((c, j))
            for w in waiting.pop((kind, node, c, j), ()):
                heapq.heappush(heap, (max(clock[w], clock[i]), w))
            heapq.heappush(heap, (clock[i], i))
        elif pending[i]:
            _run_w(out[i], pending[i], live, i)
            clock[i] = t + 1
            heapq.heappush(heap, (clock[i], i))
        elif missing is None:
            clock[i] = max(known)
            heapq.heappush(heap, (clock[i], i))
        else:
            clock[i] = t
            waiting.setdefault(missing, []).append(i)
    stuck = [nodes[i] for i in range(len(nodes)) if pos[i] < len(tasks[nodes[i]])]
    if stuck:
        raise AssertionError(f"F/B orders deadlock at nodes {stuck}")
    return {n: out[index[n]] for n in nodes}


def _run_w(out: List[Task], pending: deque, live: List[int], i: int) -> None:
    c, j = pending.popleft()
    out.append((W, c, j))
    live[i] -= 1


def emit(graph: StageGraph, trains: Dict[Node, bool], node: Node, tasks: Sequence[Task]) -> List[Action]:
    """The node's actions: each task with its receives before and its sends after."""
    name, stage = node
    out: List[Action] = []
    add = out.append
    for kind, c, j in tasks:
        if kind == F:
            for (u, uc) in graph.inputs(node, c):
                add(Action(RECV_F, name, stage, j, c, u, uc))
            add(Action(F, name, stage, j, c))
            for (d, dc) in graph.outputs(node, c):
                add(Action(SEND_F, name, stage, j, c, d, dc))
        elif kind == B:
            for (d, dc) in graph.outputs(node, c):
                add(Action(RECV_B, name, stage, j, c, d, dc))
            add(Action(B, name, stage, j, c))
            for (u, uc) in graph.inputs(node, c):
                if trains[u]:
                    add(Action(SEND_B, name, stage, j, c, u, uc))
        else:
            add(Action(W, name, stage, j, c))
    return out
