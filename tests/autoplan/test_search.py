"""The auto-planner: never worse than a plan it could have picked, within memory, and a loadable topology."""

import pytest

from mimo_runtime.autoplan import (
    Hardware, Problem, auto_plan, candidates, evaluate, even_split, is_valid, lower_bound, search, topology_dict)
from mimo_runtime.plan import make_plan
from mimo_runtime.topology import PRESETS, topology_from_dict

SLOW_LINK = Hardware(flops_per_s=5e9, link_latency_s=50e-6, link_bytes_per_s=1e9)
HARDWARE = {"default": Hardware(), "slow-link": SLOW_LINK}


def problem(preset="tiny-avlm", n=8, memory=80.0, hw=Hardware(), **kw):
    return Problem(PRESETS[preset], n, kw.pop("global_batch", 8 * n), kw.pop("micro_batch", 2), memory, hw, **kw)


# A small hand-enumerated set for tiny-avlm on 8 ranks: even split, encoder-heavy, tp, pp, cp.
HAND_PICKED = [
    (("images", (1, 1, 2, 1)), ("audio", (1, 1, 2, 1)), ("language", (1, 1, 4, 1))),
    (("images", (2, 1, 1, 1)), ("audio", (1, 1, 1, 2)), ("language", (2, 1, 1, 2))),
    (("images", (1, 1, 4, 1)), ("audio", (1, 1, 2, 1)), ("language", (1, 1, 2, 1))),
    (("images", (1, 1, 2, 1)), ("audio", (1, 1, 2, 1)), ("language", (1, 2, 2, 1))),
    (("images", (1, 1, 1, 2)), ("audio", (1, 1, 1, 2)), ("language", (1, 1, 1, 4))),
    (("images", (2, 1, 1, 1)), ("audio", (2, 1, 1, 1)), ("language", (4, 1, 1, 1))),
]


@pytest.mark.parametrize("hw", list(HARDWARE), ids=list(HARDWARE))
def test_auto_plan_is_never_worse_than_a_hand_picked_plan(hw):
    p = problem(hw=HARDWARE[hw])
    best = search(p)
    assert all(is_valid(p, c) for c in HAND_PICKED)
    for cand in HAND_PICKED:
        assert best.step_s <= evaluate(p, cand).step_s, cand


@pytest.mark.parametrize("preset,n,memory", [("tiny-vlm", 6, 80.0), ("tiny-avlm", 8, 80.0),
                                             ("tiny-avlm", 8, 0.003), ("tiny-lm", 8, 80.0)])
def test_auto_plan_is_the_fastest_of_every_candidate_that_fits(preset, n, memory):
    p = problem(preset, n, memory, SLOW_LINK)
    best = search(p)
    every = [evaluate(p, c) for c in candidates(p)]
    fitting = [ev for ev in every if ev.fits]
    assert fitting and best.step_s == min(ev.step_s for ev in fitting)
    if memory < 1:
        assert len(fitting) < len(every) and min(ev.step_s for ev in every) < best.step_s  # memory mattered
    assert best.fits and best.peak_gib <= memory


def test_the_pruning_bound_never_exceeds_the_simulated_step_time():
    p = problem(hw=SLOW_LINK)
    for cand in candidates(p):
        assert lower_bound(p, cand) <= evaluate(p, cand).step_s * (1 + 1e-9)


def test_a_tight_memory_limit_forces_model_parallelism():
    roomy, tight = search(problem(memory=80.0)), search(problem(memory=0.002))
    assert tight.peak_gib <= 0.002 < roomy.peak_gib
    assert any(tp * cp * pp > 1 for _, (tp, cp, dp, pp) in tight.candidate)


def test_no_plan_fits_gives_none():
    assert search(problem(memory=1e-6)) is None


def test_auto_plan_beats_or_ties_the_even_split_and_reports_both():
    result = auto_plan(problem(n=16, hw=SLOW_LINK))
    assert result.naive is not None and result.best.step_s <= result.naive.step_s
    assert all(s[0] == s[1] == s[3] == 1 for _, s in result.naive.candidate)  # pure data parallel


def test_even_split_shares_ranks_evenly_when_the_batch_rules_allow():
    assert even_split(problem(n=6)) == (("images", (1, 1, 2, 1)), ("audio", (1, 1, 2, 1)),
                                        ("language", (1, 1, 2, 1)))


@pytest.mark.parametrize("preset,n", [("tiny-vlm", 4), ("tiny-avlm", 8), ("tiny-avlm", 64), ("tiny-lm", 2)])
def test_the_written_topology_loads_and_plans_to_the_chosen_shapes(preset, n):
    p = problem(preset, n, frozen=frozenset(list(PRESETS[preset].encoders)[:1]))
    best = search(p)
    plan = make_plan(topology_from_dict(topology_dict(p, best)))
    assert plan.world_size == n
    for name, (tp, cp, dp, pp) in best.candidate:
        m = plan.modules[name]
        assert (m.tp, m.cp, m.dp, m.pp) == (tp, cp, dp, pp)
        assert m.frozen == (name in p.frozen)
    assert plan.num_microbatches == best.microbatches


def test_every_candidate_is_a_valid_topology():
    p = problem("tiny-avlm", 8)
    for cand in candidates(p):
        topology_from_dict(topology_dict(p, evaluate(p, cand)))


def test_planning_16k_ranks_takes_seconds_not_minutes():
    import time

    start = time.perf_counter()
    best = search(problem("tiny-avlm", 16384))
    assert best is not None and time.perf_counter() - start < 30
