"""The bridge on real gloo processes: right rows to the right ranks, gradients back, minimal bytes."""

from functools import lru_cache

import torch

from mimo_runtime.comm import Bridge, CommStats, Outbox, owned, recv_tensors, send_tensors
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.plan import ModulePlan

H = 3
GLOBAL_MB = 4
# per-sample row counts of one microbatch: variable, and a microbatch with no images at all
ROW_CASES = [[2, 0, 4, 1], [0, 0, 0, 0]]
SHAPES = {  # name: (encoder tp, dp) -> (language tp, dp[, cp, sequence_parallel]) on 4 ranks
    "fan_in_dp2_to_tp2": ((1, 2), (2, 1)),
    "fan_out_tp2_to_dp2": ((2, 1), (1, 2)),
    "dp2_to_dp2": ((1, 2), (1, 2)),
    # each language rank holds a slot of the sequence: it gets only the rows of its positions
    "fan_in_dp2_to_cp2": ((1, 2), (1, 1, 2, False)),
    "tp2_to_cp2": ((2, 1), (1, 1, 2, False)),
    "fan_in_dp2_to_tp2_sequence_parallel": ((1, 2), (2, 1, 1, True)),
}


def _rows(sample: int, n: int) -> torch.Tensor:
    return torch.arange(n * H, dtype=torch.float32).reshape(n, H) + 100.0 * sample


def _modules(shape):
    (e_tp, e_dp), lang_shape = shape
    l_tp, l_dp, l_cp, sp = lang_shape if len(lang_shape) == 4 else (*lang_shape, 1, False)
    enc = ModulePlan("images", "encoder", 0, e_tp * e_dp, e_tp, 1, e_dp, 1)
    lang = ModulePlan("language", "language", enc.size, l_tp * l_dp * l_cp, l_tp, l_cp, l_dp, 1,
                      sequence_parallel=sp)
    return enc, lang


def _slots(sample: int, n: int, slots: int):
    """The slot of each row of a sample: spread so that every slot gets some, unevenly."""
    return [(sample + j * j) % slots for j in range(n)]


def _hosts(shape):
    """Two host groups: the encoder's ranks on one, the language model's on the other."""
    enc, lang = _modules(shape)
    return ["encoder-host"] * enc.size + ["language-host"] * lang.size


def _scenario(rank: int, shape, rows_per_sample, hosts=None):
    enc, lang = _modules(shape)
    slots = lang.cp * lang.sequence_shards
    stats, outbox = CommStats(), Outbox(timeout_s=20)
    bridge = Bridge(enc, lang, GLOBAL_MB, rank, outbox, stats, timeout_s=20, hosts=hosts)
    m = enc if enc.holds(rank) else lang
    mine = list(owned(m, m.coords(rank).dp, GLOBAL_MB))
    spec = [_slots(s, rows_per_sample[s], slots) if slots > 1 else rows_per_sample[s] for s in mine]
    expected = torch.cat([_rows(s, rows_per_sample[s]) for s in mine])
    counts = [rows_per_sample[s] for s in mine]
    if m is lang:  # this rank's slot only
        keep = [torch.tensor(_slots(s, rows_per_sample[s], slots), dtype=torch.long) == lang.slot(rank)
                for s in mine]
        expected = torch.cat([_rows(s, rows_per_sample[s])[k] for s, k in zip(mine, keep)])
        counts = [int(k.sum()) for k in keep]
    if m is enc:
        bridge.send_forward(expected, spec)
        grad = bridge.recv_backward(spec, H, torch.float32, torch.device("cpu"))
        assert torch.equal(grad, -expected), (rank, grad, expected)
    else:
        got = bridge.recv_forward(counts, H, torch.float32, torch.device("cpu"))
        assert torch.equal(got, expected), (rank, got, expected)
        bridge.send_backward(-got, counts)
    outbox.wait()
    hosts = hosts or ["one"] * (enc.size + lang.size)
    by_hosts = {}
    for dst, n in bridge.bytes_to.items():
        by_hosts[(hosts[rank], hosts[dst])] = by_hosts.get((hosts[rank], hosts[dst]), 0) + n
    return {"recv": stats.payload_recv, "sent": stats.payload_sent, "min_recv": expected.numel() * 4,
            "module": m.name, "by_hosts": by_hosts}


def _worker(rank, world):
    out = {}
    for name, shape in SHAPES.items():
        for i, rows in enumerate(ROW_CASES):
            out[(name, i)] = _scenario(rank, shape, rows)
            out[(name, i, "two_hosts")] = _scenario(rank, shape, rows, _hosts(shape))
    # dict-of-tensor P2P with a shape handshake
    stats, outbox = CommStats(), Outbox(timeout_s=20)
    if rank == 0:
        send_tensors({"a": torch.ones(2, 3), "b": torch.zeros(0, 5)}, 1, outbox, stats)
    elif rank == 1:
        got = recv_tensors(["a", "b"], 0, torch.float32, torch.device("cpu"), stats, 20)
        assert got["a"].shape == (2, 3) and got["b"].shape == (0, 5)
    outbox.wait()
    return out


@lru_cache(maxsize=1)
def _results():
    return spawn(_worker, 4, timeout_s=120, collective_timeout_s=30)


def test_bridge_routes_rows_and_gradients_with_minimal_bytes():
    results = _results()
    for key in results[0]:
        per_rank = [r[key] for r in results]
        for r in per_rank:
            # every receiving rank gets exactly its own samples' rows, once (forward on the language
            # side, gradients on the encoder side): the theoretical minimum
            assert r["recv"] == r["min_recv"], (key, r)
        assert sum(r["sent"] for r in per_rank) == sum(r["recv"] for r in per_rank)


def test_across_hosts_each_replica_rows_cross_once_and_replicate_on_the_receiving_host():
    """Encoder and language model on two hosts: forward, each language replica's rows (per slot) cross
    once and its TP ranks share them on their host; backward, each encoder replica's gradients cross
    once. Every rank still receives exactly its rows (checked in _scenario)."""
    results = _results()
    for name, shape in SHAPES.items():
        for i, rows in enumerate(ROW_CASES):
            per_rank = [r[(name, i, "two_hosts")] for r in results]
            by_hosts = {}
            for r in per_rank:
                assert r["recv"] == r["min_recv"], (name, r)
                for pair, n in r["by_hosts"].items():
                    by_hosts[pair] = by_hosts.get(pair, 0) + n
            total = sum(rows) * H * 4
            assert by_hosts.get(("encoder-host", "language-host"), 0) == total, (name, by_hosts)
            assert by_hosts.get(("language-host", "encoder-host"), 0) == total, (name, by_hosts)
            # today's direct routes would cross once per receiving rank instead
            direct = [r[(name, i)] for r in results]
            assert sum(r["recv"] for r in per_rank) == sum(r["recv"] for r in direct)
