"""Bridge routing as pure data: each receiver gets each of its samples exactly once."""

import itertools

import pytest

from mimo_runtime.comm.routes import backward_routes, forward_routes, owned
from mimo_runtime.plan import ModulePlan


def _module(name, offset, tp, dp, pp=1, cp=1, sp=False):
    return ModulePlan(name, "encoder" if name != "language" else "language", offset, tp * dp * pp * cp,
                      tp, cp, dp, pp, sequence_parallel=sp)


SHAPES = [(e_tp, e_dp, e_pp, l_tp, l_dp, l_cp, sp)
          for e_tp, e_dp, e_pp, l_tp, l_dp, l_cp, sp in itertools.product([1, 2], [1, 2, 4], [1, 2], [1, 2, 4],
                                                                           [1, 2, 4], [1, 2], [False, True])
          if (e_dp % l_dp == 0 or l_dp % e_dp == 0) and (l_tp > 1 or not sp)]


@pytest.mark.parametrize("e_tp,e_dp,e_pp,l_tp,l_dp,l_cp,sp", SHAPES)
def test_every_receiver_gets_each_of_its_samples_exactly_once(e_tp, e_dp, e_pp, l_tp, l_dp, l_cp, sp):
    """Per slot of the language sequence (CP rank, and TP rank with sequence parallelism)."""
    enc = _module("images", 0, e_tp, e_dp, e_pp)
    lang = _module("language", enc.size, l_tp, l_dp, 1, l_cp, sp)
    slots = l_cp * (l_tp if sp else 1)
    G = 8
    fwd = forward_routes(enc, lang, G)
    for dst in lang.stage_ranks(0):
        got = sorted(s for r in fwd if r.dst == dst for s in range(r.lo, r.hi))
        assert got == list(owned(lang, lang.coords(dst).dp, G))
    for r in fwd:
        assert enc.coords(r.src).pp == e_pp - 1
        assert set(range(r.lo, r.hi)) <= set(owned(enc, enc.coords(r.src).dp, G))
    bwd = backward_routes(enc, lang, G)
    for dst in enc.stage_ranks(e_pp - 1):
        for slot in range(slots):
            got = sorted(s for r in bwd if r.dst == dst and lang.slot(r.src) == slot for s in range(r.lo, r.hi))
            assert got == list(owned(enc, enc.coords(dst).dp, G)), slot
    for r in bwd:
        assert set(range(r.lo, r.hi)) <= set(owned(lang, lang.coords(r.src).dp, G))
        assert lang.coords(r.src).pp == 0


def test_fan_in_spreads_senders_over_encoder_tp_ranks():
    enc = _module("images", 0, 2, 1)
    lang = _module("language", 2, 2, 1)
    senders = {r.src for r in forward_routes(enc, lang, 4)}
    assert senders == {0, 1}


def _host_cases(enc, lang):
    world = enc.size + lang.size
    return {"modules_apart": ["e"] * enc.size + ["l"] * lang.size,
            "interleaved": [f"h{r % 3}" for r in range(world)],
            "one_host": ["h"] * world}


def _blocks(routes, dst, lang, backward):
    return sorted((lang.slot(r.origin) if backward else 0, r.lo, r.hi) for r in routes if r.dst == dst)


@pytest.mark.parametrize("e_tp,e_dp,e_pp,l_tp,l_dp,l_cp,sp", SHAPES)
def test_across_hosts_each_block_crosses_once_per_receiving_group_and_host(e_tp, e_dp, e_pp, l_tp, l_dp, l_cp, sp):
    enc = _module("images", 0, e_tp, e_dp, e_pp)
    lang = _module("language", enc.size, l_tp, l_dp, 1, l_cp, sp)
    G = 8
    for case, hosts in _host_cases(enc, lang).items():
        for make, receivers, backward in ((forward_routes, lang.stage_ranks(0), False),
                                          (backward_routes, enc.stage_ranks(e_pp - 1), True)):
            plain, routes = make(enc, lang, G), make(enc, lang, G, hosts)
            if case == "one_host":
                assert routes == plain
            crossing = {}
            for dst in receivers:  # every receiver still gets exactly the blocks it needs
                assert _blocks(routes, dst, lang, backward) == _blocks(plain, dst, lang, backward), (case, dst)
            for r in routes:
                if r.via >= 0:  # a relay: from the leader on the receiver's host, which got it directly
                    assert hosts[r.src] == hosts[r.dst] and hosts[r.via] != hosts[r.dst]
                    assert any(x.src == r.via and x.dst == r.src and x.lo == r.lo and x.via < 0 for x in routes)
                elif hosts[r.src] != hosts[r.dst]:
                    # crossing: only when no rank holding the block is on the receiver's host
                    assert all(hosts[h] != hosts[r.dst] for h in _holders(enc, lang, r, backward))
                    group = (lang.coords(r.dst).dp, lang.slot(r.dst)) if not backward else enc.coords(r.dst).dp
                    key = (hosts[r.dst], group, lang.slot(r.src) if backward else 0, r.lo)
                    crossing[key] = crossing.get(key, 0) + 1
            assert all(n == 1 for n in crossing.values()), (case, crossing)


def _holders(enc, lang, r, backward):
    """Ranks that have block r's data: the sender replica's TP ranks (holding its slot)."""
    m = lang if backward else enc
    c = m.coords(r.src)
    stage = 0 if backward else m.pp - 1
    if backward and lang.sequence_parallel:
        return {r.src}
    return {m.rank(tp=t, cp=c.cp, dp=c.dp, pp=stage) for t in range(m.tp)}
