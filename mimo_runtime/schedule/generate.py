"""Generators: Plan + microbatch count -> one action list per stage node (1F1B, GPipe, forward-only,
interleaved 1F1B and zero bubble; the last two in interleave.py).

1F1B follows upstream's multimodule schedule: a node warms up with as many forwards as its longest
path (in stages) to the last language stage, capped at m, then alternates one forward and one
backward. Because every node's warm-up is at least one more than each of its successors' (or both
are capped at m), the forward a successor waits for has always been sent before the node itself
blocks on a gradient, which is why the lists are deadlock-free with asynchronous sends and blocking
receives (`validate` checks it by simulation rather than trusting this argument).
"""

from typing import Dict, Iterable, List

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, Plan
from mimo_runtime.schedule.actions import (
    B, F, OPT_STEP, RECV_B, RECV_F, REDUCE_GRADS, SEND_B, SEND_F, W, Action, Node, step_action)
from mimo_runtime.schedule.graph import COLOCATED, Schedule, StageGraph, depth_to_sink, stage_graph
from mimo_runtime.schedule.interleave import (
    backward_order, emit, forward_order, one_f_one_b, replay, warmups)
from mimo_runtime.schedule.simulate import simulate

SCHEDULE_KINDS = ("1f1b", "gpipe", "forward", "interleaved_1f1b", "zero_bubble")


def build_schedule(plan: Plan, num_microbatches: int, kind: str = "1f1b",
                   frozen_all: Iterable[str] = (), slack: int = 0, frozen_ahead: bool = False) -> Schedule:
    """Action lists for every stage node of `plan`.

    `plan.modules[e].frozen` freezes encoder e's layers but keeps its projection (on its last stage)
    trainable; `frozen_all` names encoders that get no backward and no gradients at all.
    `slack` adds that many warm-up forwards to every node but the last language stage: each
    gradient then has `slack` microbatches of compute to arrive in, hiding transfer latency, for
    `slack` more activations kept in flight. `frozen_ahead` lets a frozen encoder's last stage run all
    its forwards before its first projection backward: it stashes only the projection's inputs, so
    its forwards run ahead of the language pipeline instead of waiting for its gradients.
    """
    if slack < 0:
        raise ValueError(f"slack must be >= 0, got {slack}")
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {', '.join(SCHEDULE_KINDS)}")
    if num_microbatches < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}")
    frozen_all = frozenset(frozen_all)
    unknown = sorted(frozen_all - set(plan.encoders))
    if unknown:
        raise ValueError(f"frozen_all names {unknown}, which are not encoders of the plan "
                         f"(encoders: {sorted(plan.encoders)}; the language module always trains)")
    graph = stage_graph(plan)
    trains = _trains(plan, graph, frozen_all) if kind != "forward" else {n: False for n in graph.nodes}
    m = num_microbatches
    if graph.nodes == ((COLOCATED, 0),):
        actions = {graph.nodes[0]: _colocated(kind, m)}
    elif kind == "1f1b" and graph.interleaved:
        chunked = sorted({n for n, _ in graph.nodes if graph.num_chunks((n, 0)) > 1})
        raise ValueError(f"modules {chunked} have vpp > 1: 1f1b runs one chunk per rank; use interleaved_1f1b, "
                         "zero_bubble or gpipe")
    elif kind in ("interleaved_1f1b", "zero_bubble") or graph.interleaved:
        ahead = {node for node in graph.nodes if frozen_ahead and _frozen_projection(plan, node, frozen_all)}
        actions = _chunked(plan, graph, trains, kind, m, slack, ahead)
    else:
        depth = depth_to_sink(graph)
        ahead = {node for node in graph.nodes if frozen_ahead and _frozen_projection(plan, node, frozen_all)}
        actions = {node: _node_actions(graph, trains, node, kind, m,
                                       m if node in ahead else depth[node] + (slack if depth[node] else 0))
                   for node in graph.nodes}
    return Schedule(kind, m, graph, actions, trains)


def _chunked(plan: Plan, graph: StageGraph, trains: Dict[Node, bool], kind: str, m: int, slack: int,
             ahead: set) -> Dict[Node, List[Action]]:
    """Lists built from per-node task orders (interleave.py): interleaved 1F1B, zero bubble, and
    GPipe or forward-only with chunks.

    A lone language pipeline gets megatron's order (microbatches in groups of pp per chunk). Where
    encoders feed it, several orders are built: megatron's (warm-ups raised where needed, `_settle`)
    and the greedy replay, each with every module grouping by its own pp or all by the deepest
    module's pp (so encoder and language chunks cycle in step); the fastest under unit costs wins,
    the first on ties. All are deadlock-free by construction (replays of a run)."""
    own = {n: plan.modules[n[0]].pp for n in graph.nodes}  # megatron: microbatch_group_size_per_vp_stage = pp
    deepest = max(plan.modules[n].pp for n in {x for x, _ in graph.nodes} if plan.modules[n].vpp > 1) \
        if graph.interleaved else 1
    common = {n: max(own[n], deepest) for n in graph.nodes}
    in_graph = any(n[0] != LANG for n in graph.nodes)
    groupings = [own] + ([common] if in_graph and common != own else [])
    candidates = []
    for group in groupings:
        candidates += _orders(plan, graph, trains, kind, m, slack, ahead, group, greedy=in_graph)
    lists = [_actions(graph, trains, kind, t) for t in candidates]
    if len(lists) > 1:
        times = [simulate(Schedule(kind, m, graph, acts, trains)).makespan for acts in lists]
        return lists[min(range(len(times)), key=lambda k: (times[k], k))]
    return lists[0]


def _orders(plan: Plan, graph: StageGraph, trains: Dict[Node, bool], kind: str, m: int, slack: int, ahead: set,
            group: Dict[Node, int], greedy: bool) -> list:
    if kind == "zero_bubble" and not graph.interleaved:
        warm = dict(depth_to_sink(graph))  # ZB-H1: 1F1B's order and warm-up, W's deferred
    else:
        warm = warmups(graph, trains, group, m)
    sink = graph.nodes[-1]
    fwd = {node: forward_order(graph.num_chunks(node), group[node], m) for node in graph.nodes}
    bwd = {node: backward_order(graph.num_chunks(node), group[node], m) if trains[node] and kind != "forward" else []
           for node in graph.nodes}
    split = kind == "zero_bubble"
    caps = {}
    for node in graph.nodes:
        everything = not bwd[node] or kind == "gpipe" or node in ahead
        warm[node] = len(fwd[node]) if everything else min(warm[node] + (slack if node != sink else 0),
                                                          len(fwd[node]))
        caps[node] = min(warm[node] + 1, len(fwd[node]))  # live microbatches: the warm-up and the one in hand

    def fixed_orders():
        return {n: one_f_one_b(fwd[n], bwd[n], warm[n]) if bwd[n] else [(F, c, j) for c, j in fwd[n]]
                for n in graph.nodes}

    out = [_settle(lambda: replay(graph, fwd, bwd, caps, split, fixed_orders()), warm, fwd, group, caps)]
    if greedy:
        greedy_caps = dict(caps)
        out.append(_settle(lambda: replay(graph, fwd, bwd, greedy_caps, split), greedy_caps, fwd, group))
    return out


def _settle(run, warm, fwd, group, caps=None):
    """Run `run()` until no node is stuck, raising each stuck node's warm-up (and cap) by a group: a
    node blocked in a backward or at its cap may hold back a forward that another node needs first
    (encoders of different depths fanning into the language model); all forwards first always finishes."""
    while True:
        tasks, stuck = run()
        if not stuck:
            return tasks
        raised = [n for n in stuck if warm[n] < len(fwd[n])]
        if not raised:
            raise AssertionError(f"schedule replay cannot finish at nodes {stuck}")
        for n in raised:
            warm[n] = min(warm[n] + group[n], len(fwd[n]))
            if caps is not None:
                caps[n] = min(warm[n] + 1, len(fwd[n]))


def _actions(graph: StageGraph, trains: Dict[Node, bool], kind: str, tasks) -> Dict[Node, List[Action]]:
    out = {}
    for node in graph.nodes:
        acts = emit(graph, trains, node, tasks[node])
        if kind != "forward":
            if trains[node]:
                acts.append(step_action(REDUCE_GRADS, node))
            acts.append(step_action(OPT_STEP, node))
        out[node] = acts
    return out


def _trains(plan: Plan, graph: StageGraph, frozen_all: frozenset) -> Dict[Node, bool]:
    def trains(node: Node) -> bool:
        name, stage = node
        if name == COLOCATED or name == LANG:
            return True
        mod = plan.modules[name]
        if name in frozen_all:
            return False
        # A frozen encoder still trains the projection, which lives on its last stage.
        return not mod.frozen or stage == mod.pp - 1

    return {node: trains(node) for node in graph.nodes}


def _frozen_projection(plan: Plan, node: Node, frozen_all: frozenset) -> bool:
    """The last stage of a frozen encoder whose projection still trains."""
    name, stage = node
    mod = plan.modules.get(name)
    return (mod is not None and mod.kind == "encoder" and mod.frozen and name not in frozen_all
            and stage == mod.pp - 1)


def _colocated(kind: str, m: int) -> List[Action]:
    node = (COLOCATED, 0)
    fwd = [Action(F, COLOCATED, 0, mb) for mb in range(m)]
    if kind == "forward":
        return fwd
    bwd = [Action(B, COLOCATED, 0, mb) for mb in range(m)]
    if kind == "gpipe":
        body = fwd + bwd
    elif kind == "zero_bubble":  # one rank: nothing to fill, every W right after its B
        body = [a for mb in range(m) for a in (fwd[mb], bwd[mb], Action(W, COLOCATED, 0, mb))]
    else:
        body = [a for pair in zip(fwd, bwd) for a in pair]
    return body + [step_action(REDUCE_GRADS, node), step_action(OPT_STEP, node)]


def _node_actions(graph: StageGraph, trains: Dict[Node, bool], node: Node, kind: str, m: int,
                  warmup: int) -> List[Action]:
    name, stage = node
    up, down = graph.upstream[node], graph.downstream[node]
    grad_to = [u for u in up if trains[u]]
    out: List[Action] = []
    add = out.append  # the lists reach 400k actions at p=64, m=1024: keep this loop lean

    def forward(mb: int) -> None:
        for u in up:
            add(Action(RECV_F, name, stage, mb, 0, u))
        add(Action(F, name, stage, mb))
        for d in down:
            add(Action(SEND_F, name, stage, mb, 0, d))

    def backward(mb: int) -> None:
        for d in down:
            add(Action(RECV_B, name, stage, mb, 0, d))
        add(Action(B, name, stage, mb))
        for u in grad_to:
            add(Action(SEND_B, name, stage, mb, 0, u))

    if not trains[node]:
        for mb in range(m):
            forward(mb)
    else:
        warmup = m if kind == "gpipe" else min(warmup, m)
        for mb in range(warmup):
            forward(mb)
        for mb in range(m - warmup):
            forward(warmup + mb)
            backward(mb)
        for mb in range(m - warmup, m):
            backward(mb)
        add(step_action(REDUCE_GRADS, node))
    if kind != "forward":
        add(step_action(OPT_STEP, node))
    return out
