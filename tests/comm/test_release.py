"""Release points of sends (comm/release.py): each one is implied by causality, and they bound the send
buffers held at once by the pipeline depth, not by the number of microbatches."""

import glob
import random

import pytest

from mimo_runtime.comm.lowering import RankOps, lower_plan
from mimo_runtime.comm.release import list_items, program_items, release_points
from mimo_runtime.plan import make_plan
from mimo_runtime.schedule import build_schedule
from mimo_runtime.schedule.lower import RECV, SEND
from mimo_runtime.topology import load_topology
from tests.schedule.plans import chain_plan, random_dag

TOPOLOGIES = sorted(p for p in glob.glob("topologies/*.yaml") if not p.endswith("demo.yaml"))


def _unproven(items, released):
    """Release claims that causality does not imply, by vector clocks over the asynchronous semantics:
    a rank's item starts when its previous item ended, and a receive ends after its send was posted.
    A claim (j: (i, b)) holds iff the end of the rank's item j knows that b ended the item taking the send."""
    ranks = sorted(items)
    match = {}  # (rank, item) -> [(sender, item of the send)] for each receive of the item
    seen = {}
    for r in ranks:
        for x, ops in enumerate(items[r]):
            for kind, p in ops:
                if kind == SEND:
                    seen.setdefault((r, p), []).append(x)
    taken, posted = {}, {}
    for r in ranks:
        for x, ops in enumerate(items[r]):
            for kind, p in ops:
                if kind == RECV:
                    k = taken.setdefault((p, r), 0)
                    taken[(p, r)] += 1
                    match.setdefault((r, x), []).append((p, seen[(p, r)][k]))
                    posted.setdefault((p, r), []).append(x)
    clock, done = {}, {r: 0 for r in ranks}  # (rank, item) -> {rank: items ended}
    while any(done[r] < len(items[r]) for r in ranks):
        progressed = False
        for r in ranks:
            x = done[r]
            if x == len(items[r]):
                continue
            senders = match.get((r, x), [])
            if any(done[p] < i for p, i in senders):  # a send's item has not started yet
                continue
            vc = dict(clock[(r, x - 1)]) if x else {}
            for p, i in senders:  # the send was posted at the start of item i: what p knew then
                for q, n in (clock[(p, i - 1)] if i else {}).items():
                    vc[q] = max(vc.get(q, 0), n)
            vc[r] = x + 1
            clock[(r, x)] = vc
            done[r] += 1
            progressed = True
        assert progressed, "the items deadlock under asynchronous sends"
    bad = []
    for a, points in released.items():
        for j, pairs in points.items():
            for i, b in pairs:  # every send of item i to b, each taken in b's item posted[(a, b)][k]
                sends = [k for k, x in enumerate(seen[(a, b)]) if x == i]
                if any(k >= len(posted[(a, b)]) or clock[(a, j)].get(b, 0) <= posted[(a, b)][k] for k in sends):
                    bad.append((a, j, i, b))
    return bad


def _held(items, released):
    """Per rank, the most send ops posted and not yet released at once (end-of-step drains aside)."""
    out = {}
    for r, seq in items.items():
        pending, most = {}, 0
        for j, ops in enumerate(seq):
            for kind, p in ops:
                if kind == SEND:
                    pending[(j, p)] = pending.get((j, p), 0) + 1
            for pair in released[r].get(j, ()):
                pending.pop(pair, None)
            most = max(most, sum(pending.values()))
        out[r] = most
    return out


def _program_items(plan, m, kind="1f1b"):
    return {r: program_items(p) for r, p in lower_plan(build_schedule(plan, m, kind), plan).items()}


def _list_items(plan, m, kind="1f1b"):
    schedule, ops = build_schedule(plan, m, kind), RankOps(plan)
    return {r: list_items(schedule.for_rank(plan, r), r, ops) for r in range(plan.world_size)}


@pytest.mark.parametrize("path", TOPOLOGIES)
def test_every_release_of_the_test_topologies_is_implied_by_causality(path):
    plan = make_plan(load_topology(path))
    for kind in ("1f1b", "gpipe", "forward"):
        for items in (_program_items(plan, plan.num_microbatches, kind), _list_items(plan, plan.num_microbatches, kind)):
            assert _unproven(items, release_points(items)) == []


@pytest.mark.parametrize("seed", range(12))
def test_releases_of_large_generated_topologies_are_implied_by_causality(seed):
    rng = random.Random(seed)
    plan, _ = random_dag(rng, max_stages=24)
    m = rng.choice([1, 3, 8, 17, 64])
    items = _program_items(plan, m, rng.choice(["1f1b", "gpipe"]))
    assert _unproven(items, release_points(items)) == []


def test_a_release_before_the_proof_arrives_is_caught():
    """The checker can fail: on the pp2 chain, releasing stage 0's first send before the gradient of
    microbatch 0 came back claims what stage 1 has not shown yet."""
    items = _list_items(chain_plan(2), 4)
    released = release_points(items)
    first_send = next(j for j, ops in enumerate(items[0]) if ops == [(SEND, 1)])
    released[0] = {first_send: [(first_send, 1)]}
    assert _unproven(items, released) == [(0, first_send, first_send, 1)]


@pytest.mark.parametrize("pp", [2, 4, 8])
def test_send_buffers_held_follow_pipeline_depth_not_microbatches(pp):
    for items_of in (_program_items, _list_items):
        held = {m: _held(items, release_points(items)) for m in (2 * pp, 64)
                for items in [items_of(chain_plan(pp), m)]}
        assert held[64] == held[2 * pp], held
        assert max(held[64].values()) <= pp + 1, held


def test_without_releases_the_buffers_grow_with_microbatches():
    """The negative control of the bound above: nothing released means every send held to the end."""
    for m in (8, 64):
        items = _list_items(chain_plan(2), m)
        assert _held(items, {r: {} for r in items})[0] == m


def test_an_item_is_released_only_once_all_its_sends_to_the_peer_are_taken():
    """Rank 0 posts two sends to rank 1 in one group; rank 1 takes them in two items and answers after
    the first: that answer proves only the first, so the group's sends wait for the second answer."""
    items = {0: [[(SEND, 1), (SEND, 1)], [(RECV, 1)], [(RECV, 1)]],
             1: [[(RECV, 0)], [(SEND, 0)], [(RECV, 0)], [(SEND, 0)]]}
    released = release_points(items)
    assert released[0] == {2: [(0, 1)]}
    assert _unproven(items, released) == []
    assert _unproven(items, {0: {1: [(0, 1)]}, 1: {}}) == [(0, 1, 0, 1)]  # after the first answer: too early
