"""Lowered p2p groups on real gloo processes (comm/p2p_groups.py): the strict mode makes NCCL's
blocking visible, so a cycle that gloo's deferred sends let through times out naming rank and group."""

import torch

from mimo_runtime.comm.p2p import CommStats
from mimo_runtime.comm.p2p_groups import GroupTransport
from mimo_runtime.launch.spawn import spawn

STRICT_TIMEOUT_S = 4


def _cycle(rank: int, world: int, strict: bool) -> str:
    """Each rank sends to the next as a lone group, then receives from the previous one: every pair is
    consistent, yet under blocking sends no rank gets past its first group."""
    t = GroupTransport(rank, CommStats(), STRICT_TIMEOUT_S, strict)
    got = torch.empty(2)
    try:
        t.run([("send", (rank + 1) % world, torch.full((2,), float(rank)))], "[send>next]")
        t.run([("recv", (rank - 1) % world, got)], "[recv<prev]")
        t.drain()
    except TimeoutError as e:
        return str(e)
    return f"ok {got.tolist()}"


def _worker(rank: int, world: int):
    out = {"gloo_cycle": _cycle(rank, world, strict=False)}
    t = GroupTransport(rank, CommStats(), STRICT_TIMEOUT_S, strict=True)
    got = torch.empty(3)
    t.run([("send", (rank + 1) % world, torch.full((3,), float(rank))), ("recv", (rank - 1) % world, got),
           ("send", (rank + 1) % world, torch.empty(0))], "[ring]")  # a zero-size op: skipped on both ends
    t.drain()
    out["ring"] = got.tolist()
    out["strict_cycle"] = _cycle(rank, world, strict=True)
    return out


def test_strict_groups_deliver_a_ring_and_time_out_on_a_cycle_deferred_sends_let_through():
    results = spawn(_worker, 3, timeout_s=120, collective_timeout_s=30)
    for rank, out in enumerate(results):
        prev = float((rank - 1) % 3)
        assert out["ring"] == [prev] * 3
        assert out["gloo_cycle"] == f"ok {[prev, prev]}"
        # every rank names itself and the group it is stuck in: by its own timeout, or (a rank whose wait
        # began later) by the connection its peer closed on timing out first
        stuck = out["strict_cycle"]
        assert stuck.startswith(f"rank {rank}: strict (NCCL-like) p2p group #0 [send>next] timed out") or \
            stuck.startswith(f"rank {rank}: strict (NCCL-like) p2p group #0 [send>next] failed (a peer closed"), stuck
        assert f"unmatched: send>{(rank + 1) % 3}" in out["strict_cycle"]
    assert any(out["strict_cycle"].startswith(f"rank {r}: strict (NCCL-like) p2p group #0 [send>next] timed out")
               for r, out in enumerate(results)), "some rank's own timeout ends the cycle"
