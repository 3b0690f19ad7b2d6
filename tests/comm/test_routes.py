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
