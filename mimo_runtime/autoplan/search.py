"""Search per-module ranks, tp, cp, dp, pp; simulate each candidate; keep the fastest that fits memory.

Candidates obey the topology rules (tp divides heads (and kv heads and the vocabulary), pp divides layers, 2cp
divides the sequence, language dp divides global_batch / micro_batch, encoder and language dp divide
one another and the microbatch), use every rank, and are visited in order of a lower bound on their
step time (the busiest stage node's compute), so the simulator runs only on candidates that could
still win: branch and bound, exact under the cost model. `schedules` then tries the winner's
shapes under zero bubble and, where its pipelined modules can be split (vpp * pp divides the layers,
the microbatches are a multiple of pp), interleaved 1F1B and zero bubble with vpp 2 and 4; it keeps the
fastest that fits memory and reports its predicted gain over 1F1B.
"""

import dataclasses
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

from mimo_runtime.autoplan.costs import (
    Hardware, Shape, StageCost, gib, inflight_1f1b, module_dims, rank_bytes, stage_cost)
from mimo_runtime.plan import ModuleLayout, ModulePlan, Plan
from mimo_runtime.schedule import Costs, build_schedule, simulate
from mimo_runtime.schedule.graph import depth_to_sink, stage_graph
from mimo_runtime.topology import PresetDims

LANG = "language"


@dataclass(frozen=True)
class Problem:
    preset: PresetDims
    world_size: int
    global_batch: int
    micro_batch: int
    memory_gib: float = 80.0
    hw: Hardware = Hardware()
    frozen: FrozenSet[str] = frozenset()  # encoders whose layers are frozen (projection trains)

    @property
    def modules(self) -> Tuple[str, ...]:
        return tuple(self.preset.encoders) + (LANG,)


Candidate = Tuple[Tuple[str, Shape], ...]  # (module, (tp, cp, dp, pp)) in rank order, language last


@dataclass(frozen=True)
class Evaluation:
    candidate: Candidate
    step_s: float  # simulated makespan of one step
    bubble: float  # idle share of stage nodes x step time
    peak_gib: float  # most bytes on any rank
    fits: bool
    microbatches: int
    schedule: str = "1f1b"
    vpp: Tuple[Tuple[str, int], ...] = ()  # (module, virtual stages per rank) where > 1
    gain: float = 1.0  # 1F1B's simulated step time on the same shapes / this one's

    @property
    def shapes(self) -> Dict[str, Shape]:
        return dict(self.candidate)


def divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _size(shape: Shape) -> int:
    tp, cp, dp, pp = shape
    return tp * cp * dp * pp


def language_shapes(p: Problem, max_ranks: int) -> Iterator[Shape]:
    lang = p.preset.language
    if p.global_batch % p.micro_batch:
        return
    for tp in divisors(lang.heads):
        if lang.vocab_size % tp or lang.kv_heads % tp:
            continue
        for cp in [c for c in divisors(lang.seq_length) if c == 1 or lang.seq_length % (2 * c) == 0]:
            for pp in divisors(lang.layers):
                for dp in divisors(p.global_batch // p.micro_batch):
                    if tp * cp * pp * dp <= max_ranks:
                        yield (tp, cp, dp, pp)


def encoder_shapes(p: Problem, name: str, lang_dp: int) -> List[Shape]:
    enc = p.preset.encoders[name]
    per_mb = p.micro_batch * lang_dp
    dps = [d for d in divisors(per_mb) if lang_dp % d == 0 or d % lang_dp == 0]
    return [(tp, 1, dp, pp) for tp in divisors(enc.heads) for pp in divisors(enc.layers) for dp in dps]


def candidates(p: Problem) -> Iterator[Candidate]:
    """Every valid assignment that uses all ranks."""
    encs = list(p.preset.encoders)
    for lang in language_shapes(p, p.world_size - len(encs)):
        rest = p.world_size - _size(lang)
        options = [encoder_shapes(p, e, lang[2]) for e in encs]
        for combo in _fill(options, rest):
            yield tuple(zip(encs, combo)) + ((LANG, lang),)


def _fill(options: List[List[Shape]], budget: int) -> Iterator[Tuple[Shape, ...]]:
    if not options:
        if budget == 0:
            yield ()
        return
    if len(options) == 1:
        for s in options[0]:
            if _size(s) == budget:
                yield (s,)
        return
    for s in options[0]:
        if _size(s) < budget:
            for tail in _fill(options[1:], budget - _size(s)):
                yield (s,) + tail


def to_plan(p: Problem, cand: Candidate, vpp: Tuple[Tuple[str, int], ...] = ()) -> Plan:
    modules: Dict[str, ModulePlan] = {}
    offset = 0
    chunks = dict(vpp)
    for name, (tp, cp, dp, pp) in cand:
        kind = "language" if name == LANG else "encoder"
        modules[name] = ModulePlan(name, kind, offset, tp * cp * dp * pp, tp, cp, dp, pp, name in p.frozen,
                                   vpp=chunks.get(name, 1))
        offset += tp * cp * dp * pp
    edges = tuple((n, LANG) for n, _ in cand if n != LANG)
    return Plan(offset, ModuleLayout.NON_COLOCATED, modules, edges, p.global_batch, p.micro_batch, None)


def stage_costs(p: Problem, cand: Candidate) -> Dict[Tuple[str, int], StageCost]:
    lang_dp = dict(cand)[LANG][2]
    out = {}
    for name, shape in cand:
        d = module_dims(p.preset, name)
        samples = p.micro_batch * lang_dp // shape[2]
        for stage in range(shape[3]):
            out[(name, stage)] = stage_cost(d, shape, stage, samples, p.hw, language=name == LANG,
                                            frozen=name in p.frozen, frozen_all=False)
    return out


def lower_bound(p: Problem, cand: Candidate) -> float:
    """No schedule beats its busiest stage node: m forwards and backwards plus the gradient reduction."""
    m = p.global_batch // (p.micro_batch * dict(cand)[LANG][2])
    return max(m * (c.forward + c.backward) + c.reduce for c in stage_costs(p, cand).values())


def evaluate(p: Problem, cand: Candidate, kind: str = "1f1b", vpp: Tuple[Tuple[str, int], ...] = ()) -> Evaluation:
    plan = to_plan(p, cand, vpp)
    costs = stage_costs(p, cand)
    m = plan.num_microbatches
    graph = stage_graph(plan)
    schedule = build_schedule(plan, m, kind)
    hw = p.hw
    sim = simulate(schedule, Costs(
        forward={n: c.forward for n, c in costs.items()}, backward={n: c.backward for n, c in costs.items()},
        reduce_grads={n: c.reduce for n, c in costs.items()}, latency=hw.link_latency_s,
        bandwidth=hw.link_bytes_per_s, bytes=lambda up, down: costs[up].send_bytes))
    if kind == "1f1b":
        depth = depth_to_sink(graph)
        live = {node: inflight_1f1b(depth[node], m, schedule.trains[node]) for node in costs}
    else:  # chunk forwards alive at once, each 1/V of the stage's activations (1 without backward)
        live = {node: sim.peak_inflight[node] / graph.num_chunks(node) if schedule.trains[node] else 1
                for node in costs}
    peak = max(rank_bytes(c, live[node]) for node, c in costs.items())
    return Evaluation(cand, sim.makespan, sim.bubble_fraction, gib(peak), gib(peak) <= p.memory_gib, m, kind,
                      tuple(vpp))


def schedules(p: Problem, ev: Evaluation) -> Evaluation:
    """`ev`'s shapes under the fastest schedule that fits memory (see the module docstring)."""
    options = [ev, evaluate(p, ev.candidate, "zero_bubble")]
    for v in (2, 4):
        vpp = tuple((name, v) for name, shape in ev.candidate if _splits(p, name, shape, v, ev.microbatches))
        if vpp:
            options += [evaluate(p, ev.candidate, kind, vpp) for kind in ("interleaved_1f1b", "zero_bubble")]
    best = ev
    for o in options[1:]:
        if o.fits and o.step_s < best.step_s * (1 - 1e-9):  # a real gain, not rounding: 1F1B on ties
            best = o
    return dataclasses.replace(best, gain=ev.step_s / best.step_s)


def _splits(p: Problem, name: str, shape: Shape, v: int, m: int) -> bool:
    """The rules of `parallel.vpp` (topology/validate.py) for `v` chunks of this module."""
    pp = shape[3]
    layers = p.preset.language.layers if name == LANG else p.preset.encoders[name].layers
    return pp > 1 and name not in p.frozen and layers % (pp * v) == 0 and m % pp == 0


def search(p: Problem) -> Optional[Evaluation]:
    """The candidate with the lowest simulated step time among those that fit memory (None if none fits)."""
    bounded = sorted(((lower_bound(p, c), c) for c in candidates(p)), key=lambda bc: bc[0])
    best: Optional[Evaluation] = None
    for bound, cand in bounded:
        if best is not None and bound >= best.step_s:
            break
        ev = evaluate(p, cand)
        if ev.fits and (best is None or ev.step_s < best.step_s):
            best = ev
    return best


def even_split(p: Problem) -> Optional[Candidate]:
    """The naive plan: every module pure data-parallel, ranks shared as evenly as the batch rules allow."""
    encs = list(p.preset.encoders)
    target = p.world_size / len(p.modules)
    best, best_gap = None, None
    for dp in divisors(p.global_batch // p.micro_batch):
        rest = p.world_size - dp
        if rest < len(encs):
            continue
        options = [[s for s in encoder_shapes(p, e, dp) if s[0] == s[3] == 1] for e in encs]
        for combo in _fill(options, rest):
            cand = tuple(zip(encs, combo)) + ((LANG, (1, 1, dp, 1)),)
            gap = sum(abs(_size(s) - target) for _, s in cand)
            if best_gap is None or gap < best_gap:
                best, best_gap = cand, gap
    return best


def is_valid(p: Problem, cand: Candidate) -> bool:
    shapes = dict(cand)
    lang = shapes.get(LANG)
    if lang is None or lang not in set(language_shapes(p, p.world_size)):
        return False
    encs = [n for n, _ in cand if n != LANG]
    if sorted(encs) != sorted(p.preset.encoders):
        return False
    if any(shapes[e] not in encoder_shapes(p, e, lang[2]) for e in encs):
        return False
    return sum(_size(s) for _, s in cand) == p.world_size
