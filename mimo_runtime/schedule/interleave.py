"""Interleaved (virtual pipeline) and zero-bubble orders over the module graph.

A node's compute is a sequence of tasks (kind, chunk, mb); `emit` adds the receives before and the
sends after each task, so the chunk-level edges of the StageGraph decide the messages.

Interleaved 1F1B is megatron's `forward_backward_pipelining_with_interleaving`: microbatches run in
groups of pp per chunk (forward: chunks 0..V-1 for each group, backward: V-1..0), a warm-up of
forwards, then one forward and one backward in turn, then the remaining backwards. Megatron's warm-up
on rank r of a chain, 2 * (pp - r - 1) + (V - 1) * pp, is the number of forwards (less the one the
steady state starts with) a rank finishes, running forwards back to back, before the gradient of its
first backward can arrive. `warmups` computes exactly that on the chunk graph with unit costs, which
gives megatron's numbers on a chain (and, as megatron, all forwards first when m == pp) and extends
them to encoders (interleaved or not) fanning into the language model.

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
from typing import Dict, List, Optional, Sequence, Tuple

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
    cost = {n: 1.0 / graph.num_chunks(n) for n in graph.nodes}  # a stage's unit of work, shared by its chunks
    done = _forward_times(graph, orders, cost)
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
        ends[key] = grad_start[key] + cost[key[0]]
    out = {}
    for n in graph.nodes:
        if not trains[n]:
            out[n] = len(orders[n])
            continue
        if graph.num_chunks(n) > 1 and m == group[n]:  # megatron: all forwards first when m == pp
            out[n] = len(orders[n])
            continue
        first = (n, graph.num_chunks(n) - 1)
        arrive = grad_start.get(first, float("inf"))
        count = sum(1 for c, j in orders[n] if done[(n, c, j)] <= arrive + 1e-9)
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


def _forward_times(graph: StageGraph, orders: Dict[Node, List[Tuple[int, int]]],
                   cost: Dict[Node, float]) -> Dict[Tuple[Node, int, int], float]:
    """End time of every forward, each node running its forward order back to back."""
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
                t = max([clock[n]] + ins) + cost[n]
                done[(n, c, j)] = clock[n] = t
                pos[n] += 1
                progress = True
    if any(pos[n] < len(orders[n]) for n in graph.nodes):
        raise AssertionError("forward orders deadlock: a chunk waits for a later chunk of the same microbatch")
    return done


def replay(graph: StageGraph, fwd: Dict[Node, List[Tuple[int, int]]], bwd: Dict[Node, List[Tuple[int, int]]],
           caps: Dict[Node, int], split: bool,
           fixed: Optional[Dict[Node, List[Task]]] = None) -> Tuple[Dict[Node, List[Task]], List[Node]]:
    """Each node's tasks, chosen by running the graph with unit costs (module docstring).

    A node takes its forwards and backwards in their orders: the next forward when its input is there
    and fewer than `caps[node]` microbatches are live, else the next backward when its gradient is
    there, else (`split`) the oldest deferred W, else it waits for whichever input comes first. A
    stage's F costs 1 and its backward 1 (B and W half each when split), shared by its chunks.
    With `fixed`, each node runs exactly that F/B sequence instead, and only the W's are placed (a W
    also runs before a forward that would exceed the cap). Returns the tasks and the nodes that could
    not finish (at their cap, or blocked in a fixed backward: raise their warm-up and run again).
    """
    nodes = list(graph.nodes)
    n_nodes = len(nodes)
    share = [1.0 / graph.num_chunks(n) for n in nodes]
    took = {F: 1.0, B: 0.5 if split else 1.0, W: 0.5}
    finished: Dict[Tuple[str, Node, int, int], float] = {}
    fi, bi = [0] * n_nodes, [0] * n_nodes
    clock = [0.0] * n_nodes
    live = [0] * n_nodes  # forwards run whose backward (W when split) has not
    pending: List[deque] = [deque() for _ in nodes]
    out: List[List[Task]] = [[] for _ in nodes]
    waiting: Dict[Tuple[str, Node, int, int], List[int]] = {}
    version = [0] * n_nodes
    heap = [(0.0, i, 0) for i in range(n_nodes)]

    def push(i: int, t: float) -> None:
        version[i] += 1
        heapq.heappush(heap, (t, i, version[i]))

    def inputs_at(deps):
        """(latest arrival, None) once every input is there, else (None, a missing one)."""
        latest = 0.0
        for d in deps:
            got = finished.get(d)
            if got is None:
                return None, d
            latest = max(latest, got)
        return latest, None

    while heap:
        t, i, ver = heapq.heappop(heap)
        if ver != version[i]:
            continue
        node = nodes[i]
        if t < clock[i]:
            push(i, clock[i])
            continue
        run = None
        options = []
        if fixed is not None:
            seq = fixed[node]
            k = fi[i] + bi[i]
            if k < len(seq):
                kind, c, j = seq[k]
                deps = ([(F, u, uc, j) for u, uc in graph.inputs(node, c)] if kind == F
                        else [(F, node, c, j)] + [(B, d, dc, j) for d, dc in graph.outputs(node, c)])
                if not (kind == F and pending[i] and live[i] >= caps[node]):
                    options.append((seq[k], inputs_at(deps)))
        elif fi[i] < len(fwd[node]) and live[i] < caps[node]:
            c, j = fwd[node][fi[i]]
            options.append(((F, c, j), inputs_at([(F, u, uc, j) for u, uc in graph.inputs(node, c)])))
        if fixed is None and bi[i] < len(bwd[node]):
            c, j = bwd[node][bi[i]]
            deps = [(F, node, c, j)] + [(B, d, dc, j) for d, dc in graph.outputs(node, c)]
            options.append(((B, c, j), inputs_at(deps)))
        for task, (at, _) in options:
            if at is not None and at <= t + 1e-9:
                run = task
                break
        if run is None and pending[i]:
            run = (W,) + pending[i].popleft()
        if run is None:
            if not options:
                continue  # finished, or at its cap with nothing to take back: see `stuck`
            times = [at for _, (at, _) in options if at is not None]
            for _, (at, missing) in options:
                if missing is not None:
                    waiting.setdefault(missing, []).append(i)
            if times:
                push(i, min(times))
            continue
        kind, c, j = run
        out[i].append(run)
        clock[i] = t + took[kind] * share[i]
        if kind == F:
            fi[i] += 1
            live[i] += 1
        elif kind == B:
            bi[i] += 1
            if split:
                pending[i].append((c, j))
            else:
                live[i] -= 1
        else:
            live[i] -= 1
        key = (kind, node, c, j)
        finished[key] = clock[i]
        for w in waiting.pop(key, ()):
            if w != i:
                push(w, max(clock[w], clock[i]))
        push(i, clock[i])
    stuck = [n for k, n in enumerate(nodes) if fi[k] < len(fwd[n]) or bi[k] < len(bwd[n]) or pending[k]]
    return {n: out[k] for k, n in enumerate(nodes)}, stuck


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
