"""Interleaved 1F1B and zero bubble: megatron's order on a chain, and properties over large generated graphs.

Every list must run under both validators (asynchronous sends, and the NCCL lowering), run each
(chunk, microbatch) F, B (and W) exactly once in dependency order, and, with unit costs, leave a
smaller bubble than 1F1B on the same topology and microbatch count.
"""

import dataclasses
import random

import pytest

from mimo_runtime.comm.lowering import lower_plan, rank_chunks
from mimo_runtime.schedule import (
    B, F, W, ScheduleError, build_schedule, build_steps, parse_action, simulate, validate)
from mimo_runtime.schedule.actions import Action
from mimo_runtime.schedule.graph import Schedule
from mimo_runtime.schedule.lower import Group, _message
from mimo_runtime.schedule.nccl import check_nccl
from tests.schedule.plans import dag_plan


def megatron_order(pp: int, rank: int, chunks: int, m: int):
    """Reference: megatron's forward_backward_pipelining_with_interleaving, written from its text
    (microbatch_group_size_per_vp_stage = pp): the (kind, chunk, mb) sequence of one rank."""
    total = m * chunks

    def chunk_mb(k, forward):
        in_group = k % (pp * chunks)
        chunk = in_group // pp
        return (chunk if forward else chunks - 1 - chunk), (k // (pp * chunks)) * pp + in_group % pp

    if m == pp:
        warmup = total
    else:
        warmup = min((pp - rank - 1) * 2 + (chunks - 1) * pp, total)
    out = [(F,) + chunk_mb(k, True) for k in range(warmup)]
    for k in range(total - warmup):
        out += [(F,) + chunk_mb(warmup + k, True), (B,) + chunk_mb(k, False)]
    out += [(B,) + chunk_mb(k, False) for k in range(total - warmup, total)]
    return out


def compute(schedule: Schedule, node, kinds=(F, B, W)):
    return [(a.kind, a.chunk, a.mb) for a in schedule.actions[node] if a.kind in kinds]


@pytest.mark.parametrize("pp, chunks, m", [(2, 2, 4), (4, 2, 4), (4, 2, 8), (4, 2, 16), (4, 4, 8), (3, 2, 9),
                                           (8, 2, 16), (8, 4, 32), (16, 2, 32)])
def test_a_chain_runs_megatrons_interleaved_order(pp, chunks, m):
    plan = dag_plan([], pp, language_vpp=chunks)
    schedule = build_schedule(plan, m, "interleaved_1f1b")
    validate(schedule)
    for stage in range(pp):
        assert compute(schedule, ("language", stage)) == megatron_order(pp, stage, chunks, m), stage


def test_chunks_wrap_from_the_last_stage_to_the_first_and_print_both_chunks():
    schedule = build_schedule(dag_plan([], 2, language_vpp=2), 4, "interleaved_1f1b")
    last = [str(a) for a in schedule.actions[("language", 1)] if a.kind == "SEND_F" and a.chunk == 0]
    assert last == [f"language.1:SEND_F{j}>language.0c1" for j in range(4)]
    first = [str(a) for a in schedule.actions[("language", 0)] if a.kind == "SEND_B" and a.chunk == 1]
    assert first == [f"language.0c1:SEND_B{j}>language.1" for j in range(4)]
    for node in schedule.nodes:
        for a in schedule.actions[node]:
            assert parse_action(str(a)) == a


def test_encoders_feed_the_language_models_first_virtual_stage_from_their_last():
    plan = dag_plan([("images", 2, False, 2), ("audio", 3, False)], 2, language_vpp=2)
    schedule = build_schedule(plan, 6, "interleaved_1f1b")
    validate(schedule)
    recv = {(a.peer, a.peer_chunk, a.chunk) for a in schedule.actions[("language", 0)] if a.kind == "RECV_F"}
    assert recv == {(("images", 1), 1, 0), (("audio", 2), 0, 0), (("language", 1), 0, 1)}
    grads = {(a.peer, a.peer_chunk) for a in schedule.actions[("language", 0)] if a.kind == "SEND_B" and a.chunk == 0}
    assert grads == {(("images", 1), 1), (("audio", 2), 0)}


def test_zero_bubble_at_v1_keeps_1f1bs_order_and_memory():
    plan = dag_plan([], 4)
    one = build_schedule(plan, 8, "1f1b")
    zb = build_schedule(plan, 8, "zero_bubble")
    r1, rz = validate(one), validate(zb)
    for node in one.nodes:
        assert compute(zb, node, (F, B)) == compute(one, node, (F, B)), node
        assert rz.peak_inflight[node] == r1.peak_inflight[node], node
    assert rz.bubble_fraction < r1.bubble_fraction
    # every rank but the last defers W's into its cool-down, where 1F1B idles
    tail = compute(zb, ("language", 0))[-4:]
    assert [k for k, _, _ in tail].count(W) >= 2


def test_w_is_only_allowed_in_zero_bubble_and_only_after_its_b():
    schedule = build_schedule(dag_plan([], 2), 2, "zero_bubble")
    node = ("language", 1)
    acts = schedule.actions[node]
    i = next(k for k, a in enumerate(acts) if a.kind == W)
    j = next(k for k, a in enumerate(acts) if a.kind == B and a.mb == acts[i].mb)
    early = acts[:j] + [acts[i]] + [a for k, a in enumerate(acts) if k >= j and k != i]
    with pytest.raises(ScheduleError, match="W0 before B0"):
        validate(Schedule(schedule.kind, 2, schedule.graph, {**schedule.actions, node: early}, schedule.trains))
    missing = [a for a in acts if a.kind != W or a.mb != 1]
    with pytest.raises(ScheduleError, match="reduced before the last weight gradient"):
        validate(Schedule(schedule.kind, 2, schedule.graph, {**schedule.actions, node: missing}, schedule.trains))
    plain = build_schedule(dag_plan([], 2), 2, "1f1b")
    with_w = plain.actions[node][:-2] + [Action(W, "language", 1, 0)] + plain.actions[node][-2:]
    with pytest.raises(ScheduleError, match="W belongs to zero_bubble"):
        validate(Schedule("1f1b", 2, plain.graph, {**plain.actions, node: with_w}, plain.trains))


def test_a_wrong_chunk_or_a_wrong_peer_chunk_is_named():
    schedule = build_schedule(dag_plan([], 2, language_vpp=2), 2, "interleaved_1f1b")
    node = ("language", 0)
    acts = schedule.actions[node]
    k = next(i for i, a in enumerate(acts) if a.kind == "RECV_F")
    bad = dataclasses.replace(acts[k], peer_chunk=1)
    with pytest.raises(ScheduleError, match="is not a neighbour of chunk 1"):
        validate(Schedule(schedule.kind, 2, schedule.graph, {**schedule.actions, node: acts[:k] + [bad] + acts[k + 1:]},
                          schedule.trains))
    k = next(i for i, a in enumerate(acts) if a.kind == F)
    bad = dataclasses.replace(acts[k], chunk=2)
    with pytest.raises(ScheduleError, match="chunk 2 is outside 0..1"):
        validate(Schedule(schedule.kind, 2, schedule.graph, {**schedule.actions, node: acts[:k] + [bad] + acts[k + 1:]},
                          schedule.trains))


def test_1f1b_refuses_chunks_and_colocated_zero_bubble_runs_w_after_each_b():
    with pytest.raises(ValueError, match="use interleaved_1f1b, zero_bubble or gpipe"):
        build_schedule(dag_plan([], 2, language_vpp=2), 4, "1f1b")
    from mimo_runtime.plan import ModuleLayout
    plan = dag_plan([], 1, layout=ModuleLayout.COLOCATED)
    zb = build_schedule(plan, 3, "zero_bubble")
    validate(zb)
    assert [a.cell() for a in zb.actions[("*", 0)]] == ["F0", "B0", "W0", "F1", "B1", "W1", "F2", "B2", "W2",
                                                         "REDUCE", "OPT"]


def _random_case(rng: random.Random, all_interleaved: bool = False):
    """A generated graph: up to 4 encoders and the language model, pp up to 16, vpp in {1, 2, 4}
    (every module pipelined and interleaved with `all_interleaved`); m a multiple of each chunked pp."""
    lang_v = rng.choice([2, 4] if all_interleaved else [1, 2, 2, 4])
    lang_pp = rng.choice([2, 4, 8, 16]) if lang_v > 1 else rng.randint(2, 16)
    encoders, budget = [], 48 - lang_pp
    for i in range(rng.randint(0, 4)):
        v = rng.choice([2, 4] if all_interleaved else [1, 1, 2, 4])
        pp = rng.choice([p for p in (2, 4, 8) if p <= budget] or [1]) if v > 1 else rng.randint(1, min(8, budget))
        if pp == 1 and all_interleaved:
            break
        v = v if pp > 1 else 1
        budget -= pp
        encoders.append((f"enc{i}", pp, False, v))
        if budget < 2:
            break
    if lang_v == 1 and all(e[3] == 1 for e in encoders):
        lang_v, lang_pp = 2, 1 << max(1, lang_pp.bit_length() - 1)
    step = max([lang_pp] if lang_v > 1 else [] + [pp for _, pp, _, v in encoders if v > 1])
    step = max([step] + [pp for _, pp, _, v in encoders if v > 1] + ([lang_pp] if lang_v > 1 else []))
    m = step * rng.randint(1, max(1, 64 // step))
    plan = dag_plan(encoders, lang_pp, tp=rng.choice([1, 2]), dp=rng.choice([1, 2]), language_vpp=lang_v)
    return plan, m


def _unchunked(plan):
    return dataclasses.replace(plan, modules={n: dataclasses.replace(m, vpp=1) for n, m in plan.modules.items()})


def _check_lowered(schedule: Schedule, plan):
    """The lowered programs run under NCCL's rules, and between any two ranks the k-th send is the
    k-th receive's message: interleaving puts several channels between two ranks, which untagged
    point-to-point messages only survive if both ends post them in one order."""
    programs = lower_plan(schedule, plan)
    check_nccl(programs, chunks=rank_chunks(schedule, plan))
    sent, got = {}, {}
    for rank, program in programs.items():
        for item in program:
            if isinstance(item, Group):
                for a, ops in item.messages:
                    for kind, peer in ops:
                        pair, side = ((rank, peer), sent) if kind == "send" else ((peer, rank), got)
                        side.setdefault(pair, []).append(_message(a, a.node))
    assert sent == got


def _check_once_in_order(schedule: Schedule):
    for node in schedule.nodes:
        chunks = schedule.graph.num_chunks(node)
        tasks = compute(schedule, node)
        every = {(c, j) for c in range(chunks) for j in range(schedule.num_microbatches)}
        pos = {}
        for i, t in enumerate(tasks):
            assert t not in pos, (node, t)
            pos[t] = i
        kinds = (F, B, W) if schedule.kind == "zero_bubble" else (F, B)
        for kind in kinds:
            assert {(c, j) for k, c, j in tasks if k == kind} == every, (node, kind)
        for c, j in every:
            assert pos[(F, c, j)] < pos[(B, c, j)], (node, c, j)
            if schedule.kind == "zero_bubble":
                assert pos[(B, c, j)] < pos[(W, c, j)], (node, c, j)
            # a later chunk of the same microbatch on this rank runs its forward first, its backward first
            if c + 1 < chunks:
                assert pos[(F, c, j)] < pos[(F, c + 1, j)] and pos[(B, c + 1, j)] < pos[(B, c, j)], (node, c, j)


@pytest.mark.parametrize("seed", range(8))
def test_generated_graphs_are_deadlock_free_in_both_modes_and_zero_bubble_beats_1f1b(seed):
    """Any mix of interleaved and plain modules. Interleaving alone does not always win here: a plain
    pipelined encoder keeps its own fill and drain (docs/parallelism.md gives the numbers)."""
    rng = random.Random(seed)
    plan, m = _random_case(rng)
    base = validate(build_schedule(_unchunked(plan), m, "1f1b")).bubble_fraction
    for kind in ("interleaved_1f1b", "zero_bubble"):
        schedule = build_schedule(plan, m, kind)
        result = validate(schedule)
        _check_once_in_order(schedule)
        _check_lowered(schedule, plan)
        if kind == "zero_bubble":
            assert result.bubble_fraction < base, (plan.modules, m)


@pytest.mark.parametrize("seed", range(8))
def test_graphs_of_interleaved_modules_beat_1f1b_with_both_schedules(seed):
    """Every module interleaved: zero bubble always wins; interleaved 1F1B wins where the language
    model is the deepest pipeline (it sets the rhythm; an encoder deeper than it, grouped by its own
    pp, can lose a little: docs/parallelism.md)."""
    rng = random.Random(1000 + seed)
    plan, m = _random_case(rng, all_interleaved=True)
    base = validate(build_schedule(_unchunked(plan), m, "1f1b")).bubble_fraction
    deepest = plan.language.pp >= max(e.pp for e in plan.modules.values())
    for kind in ("interleaved_1f1b", "zero_bubble") if deepest else ("zero_bubble",):
        schedule = build_schedule(plan, m, kind)
        result = validate(schedule)
        _check_once_in_order(schedule)
        _check_lowered(schedule, plan)
        assert result.bubble_fraction < base, (kind, [(n, x.pp, x.vpp) for n, x in plan.modules.items()], m)


@pytest.mark.parametrize("seed", range(4))
def test_zero_bubble_without_chunks_is_deadlock_free_and_beats_1f1b(seed):
    rng = random.Random(100 + seed)
    plan, m = _random_case(rng)
    plan = _unchunked(plan)
    base = validate(build_schedule(plan, m, "1f1b"))
    schedule = build_schedule(plan, m, "zero_bubble")
    result = validate(schedule)
    _check_once_in_order(schedule)
    check_nccl(lower_plan(schedule, plan))
    assert result.bubble_fraction < base.bubble_fraction
    assert result.peak_inflight == base.peak_inflight  # ZB-H1: 1F1B's activation memory


def test_the_largest_case_pp16_v4_m64_validates_in_both_modes():
    plan = dag_plan([("images", 8, False, 2), ("audio", 4, False, 4)], 16, language_vpp=4)
    base = validate(build_schedule(_unchunked(plan), 64, "1f1b")).bubble_fraction
    for kind in ("interleaved_1f1b", "zero_bubble"):
        schedule = build_schedule(plan, 64, kind)
        assert validate(schedule).bubble_fraction < base
        _check_once_in_order(schedule)
        _check_lowered(schedule, plan)


def test_interleaved_lists_compose_with_a_frozen_encoders_lead_over_steps():
    plan = dag_plan([("images", 2, False)], 2, language_vpp=2)
    steps = build_steps(plan, 4, 3, "interleaved_1f1b", frozen_all=["images"], lead=2)
    simulate(steps)
    check_nccl(lower_plan(steps, plan))
    one = simulate(build_steps(plan, 4, 3, "interleaved_1f1b", frozen_all=["images"], lead=0))
    assert simulate(steps).makespan < one.makespan


def test_interleaved_bubble_follows_megatrons_formula_on_a_chain():
    # unit costs: (p - 1) / (V * m + p - 1), against 1F1B's (p - 1) / (m + p - 1)
    for pp, v, m in [(2, 2, 8), (4, 2, 8), (4, 4, 16), (8, 2, 16)]:
        result = validate(build_schedule(dag_plan([], pp, language_vpp=v), m, "interleaved_1f1b"))
        assert result.bubble_fraction == pytest.approx((pp - 1) / (v * m + pp - 1)), (pp, v, m)


@pytest.mark.parametrize("kind", ["interleaved_1f1b", "zero_bubble"])
def test_frozen_encoders_compose_with_chunks(kind):
    # an encoder frozen entirely may be interleaved (forwards only); a frozen one (projection trains) runs vpp 1
    plan = dag_plan([("images", 2, False, 2), ("audio", 2, True)], 2, language_vpp=2)
    schedule = build_schedule(plan, 4, kind, frozen_all=["images"], frozen_ahead=True)
    validate(schedule)
    _check_lowered(schedule, plan)
    assert {a.kind for n in schedule.nodes if n[0] == "images" for a in schedule.actions[n]} <= {
        "F", "RECV_F", "SEND_F", "OPT_STEP"}
    audio = [a.kind for a in schedule.actions[("audio", 1)]]
    assert audio.index("B") > max(i for i, k in enumerate(audio) if k == "F")  # all forwards ahead
    steps = build_steps(plan, 4, 2, kind, frozen_all=["images"], lead=2)
    simulate(steps)
    check_nccl(lower_plan(steps, plan))
