"""The stage-node DAG of a Plan, and `Schedule`: one action list per stage node.

A stage node is (module, pp stage). Every rank of a node (its tp x cp x dp ranks) runs the same list,
so schedules are built and checked per node and handed to ranks with `Schedule.for_rank`. Colocated
plans have a single node ("*", 0): every rank runs every module, one microbatch at a time.

With interleaving (`vpp` V > 1) a node holds V chunks; chunk c of stage p is the module's virtual stage
c * pp + p, so messages run between (node, chunk) pairs: inside a module from (stage p, chunk c) to
(p + 1, c), and from the last stage's chunk c to the first stage's chunk c + 1; across modules from
each encoder's last virtual stage to the language model's first. The node-level `upstream` and
`downstream` stay a DAG without the wrap-around (1F1B's warm-up depths are computed on it);
`inputs` and `outputs` are the chunk-level edges.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from mimo_runtime.plan import MIMO_LANGUAGE_MODULE_KEY as LANG, ModuleLayout, Plan
from mimo_runtime.schedule.actions import Action, Node

COLOCATED = "*"


@dataclass(frozen=True)
class StageGraph:
    nodes: Tuple[Node, ...]  # topological: each encoder's stages, then the language stages
    upstream: Dict[Node, Tuple[Node, ...]]
    downstream: Dict[Node, Tuple[Node, ...]]
    ranks: Dict[Node, Tuple[int, ...]]
    chunks: Dict[Node, int] = field(default_factory=dict)  # V of each node (missing: 1)
    # (node, chunk) -> the (node, chunk) pairs it receives activations from / sends them to
    chunk_upstream: Dict[Tuple[Node, int], Tuple[Tuple[Node, int], ...]] = field(default_factory=dict)
    chunk_downstream: Dict[Tuple[Node, int], Tuple[Tuple[Node, int], ...]] = field(default_factory=dict)

    def num_chunks(self, node: Node) -> int:
        return self.chunks.get(node, 1)

    def inputs(self, node: Node, chunk: int) -> Tuple[Tuple[Node, int], ...]:
        got = self.chunk_upstream.get((node, chunk))
        return got if got is not None else tuple((u, 0) for u in self.upstream[node])

    def outputs(self, node: Node, chunk: int) -> Tuple[Tuple[Node, int], ...]:
        got = self.chunk_downstream.get((node, chunk))
        return got if got is not None else tuple((d, 0) for d in self.downstream[node])

    @property
    def interleaved(self) -> bool:
        return any(v > 1 for v in self.chunks.values())


def stage_graph(plan: Plan) -> StageGraph:
    if plan.layout is ModuleLayout.COLOCATED:
        node = (COLOCATED, 0)
        return StageGraph((node,), {node: ()}, {node: ()}, {node: tuple(range(plan.world_size))})
    _check_disjoint(plan)
    lang = plan.language
    order = [n for n in plan.modules if n != LANG] + [LANG]
    nodes = tuple((n, s) for n in order for s in range(plan.modules[n].pp))
    up: Dict[Node, List[Node]] = {node: [] for node in nodes}
    for name in order:
        for s in range(1, plan.modules[name].pp):
            up[(name, s)].append((name, s - 1))
    for src, dst in plan.edges:
        assert dst == LANG, f"edge {src} -> {dst}: only encoder -> language edges are scheduled"
        up[(LANG, 0)].append((src, plan.modules[src].pp - 1))
    down: Dict[Node, List[Node]] = {node: [] for node in nodes}
    for node in nodes:
        for u in up[node]:
            down[u].append(node)
    ranks = {(n, s): tuple(plan.modules[n].stage_ranks(s)) for n, s in nodes}
    assert (LANG, lang.pp - 1) == nodes[-1]
    chunks = {(n, s): plan.modules[n].vpp for n, s in nodes}
    cup = _chunk_upstream(plan, order)
    cdown: Dict[Tuple[Node, int], List[Tuple[Node, int]]] = {key: [] for key in cup}
    for key, ins in cup.items():
        for u in ins:
            cdown[u].append(key)
    return StageGraph(nodes, {k: tuple(v) for k, v in up.items()}, {k: tuple(v) for k, v in down.items()}, ranks,
                      chunks, {k: tuple(v) for k, v in cup.items()}, {k: tuple(v) for k, v in cdown.items()})


def _chunk_upstream(plan: Plan, order: List[str]) -> Dict[Tuple[Node, int], List[Tuple[Node, int]]]:
    """Each (node, chunk)'s inputs, walking every module's virtual stages c * pp + p in order."""
    up: Dict[Tuple[Node, int], List[Tuple[Node, int]]] = {}
    for name in order:
        mod = plan.modules[name]
        for c in range(mod.vpp):
            for s in range(mod.pp):
                key = ((name, s), c)
                if s > 0:
                    up[key] = [((name, s - 1), c)]
                elif c > 0:
                    up[key] = [((name, mod.pp - 1), c - 1)]
                else:
                    up[key] = []
    for src, _ in plan.edges:
        enc = plan.modules[src]
        up[((LANG, 0), 0)].append(((src, enc.pp - 1), enc.vpp - 1))
    return up


def _check_disjoint(plan: Plan) -> None:
    for rank in range(plan.world_size):
        held = plan.modules_on(rank)
        if len(held) > 1:
            raise ValueError(f"rank {rank} holds modules {held} in a non-colocated plan; a schedule needs "
                             "each rank in exactly one stage node (or every module on every rank, pp=1)")


def depth_to_sink(graph: StageGraph) -> Dict[Node, int]:
    """Longest path (in stage hops) from each node to the last language stage."""
    depth: Dict[Node, int] = {}
    for node in reversed(graph.nodes):
        depth[node] = max((depth[d] + 1 for d in graph.downstream[node]), default=0)
    return depth


@dataclass(frozen=True)
class Schedule:
    kind: str  # "1f1b" | "gpipe" | "forward"
    num_microbatches: int
    graph: StageGraph
    actions: Dict[Node, List[Action]]
    trains: Dict[Node, bool]  # the node runs backward and reduces gradients

    @property
    def nodes(self) -> Tuple[Node, ...]:
        return self.graph.nodes

    @property
    def training(self) -> bool:
        return self.kind != "forward"

    def node_of(self, plan: Plan, rank: int) -> Node:
        if not 0 <= rank < plan.world_size:
            raise ValueError(f"rank {rank} is outside the plan's world of {plan.world_size} ranks")
        if self.nodes == ((COLOCATED, 0),):
            return (COLOCATED, 0)
        name = plan.modules_on(rank)[0]
        return (name, plan.modules[name].coords(rank).pp)

    def for_rank(self, plan: Plan, rank: int) -> List[Action]:
        return self.actions[self.node_of(plan, rank)]


def node_name(node: Node) -> str:
    return f"{node[0]}.{node[1]}"


def rank_span(ranks: Tuple[int, ...]) -> str:
    if ranks and list(ranks) == list(range(ranks[0], ranks[-1] + 1)):
        return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"
    return "ranks " + ",".join(map(str, ranks))
