"""Bridge routing as pure data: each receiver gets each of its samples exactly once."""

import itertools

import pytest

from mimo_runtime.comm.routes import backward_routes, forward_routes, owned
from mimo_runtime.plan import ModulePlan


def _module(name, offset, tp, dp, pp=1, cp=1):
    return ModulePlan(name, "encoder" if name != "language" else "language", offset, tp * dp * pp * cp,
                      tp, cp, dp, pp)


SHAPES = [(e_tp, e_dp, e_pp, l_tp, l_dp, l_cp)
          for e_tp, e_dp, e_pp, l_tp, l_dp, l_cp in itertools.product([1, 2], [1, 2, 4], [1, 2], [1, 2, 4],
                                                                       [1, 2, 4], [1, 2])
          if e_dp % l_dp == 0 or l_dp % e_dp == 0]


@pytest.mark.parametrize("e_tp,e_dp,e_pp,l_tp,l_dp,l_cp", SHAPES)
def test_every_receiver_gets_each_of_its_samples_exactly_once(e_tp, e_dp, e_pp, l_tp, l_dp, l_cp):
    enc = _module("images", 0, e_tp, e_dp, e_pp)
    lang = _module("language", enc.size, l_tp, l_dp, 1, l_cp)
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
        got = sorted(s for r in bwd if r.dst == dst for s in range(r.lo, r.hi))
        assert got == list(owned(enc, enc.coords(dst).dp, G))
    for r in bwd:
        assert set(range(r.lo, r.hi)) <= set(owned(lang, lang.coords(r.src).dp, G))
        assert lang.coords(r.src).pp == 0


def test_fan_in_spreads_senders_over_encoder_tp_ranks():
    enc = _module("images", 0, 2, 1)
    lang = _module("language", 2, 2, 1)
    senders = {r.src for r in forward_routes(enc, lang, 4)}
    assert senders == {0, 1}
