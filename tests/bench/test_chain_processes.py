"""Our executor on the benchmark chain: known shapes skip headers, early receives, same result as torch's
(also interleaved 1F1B and zero bubble at V=2 against torch's ScheduleInterleaved1F1B / InterleavedZeroBubble)."""

from dataclasses import replace

import torch

from mimo_runtime.bench.chain import ChainConfig
from mimo_runtime.launch.spawn import spawn

CFG = ChainConfig(hidden=16, layers=2, microbatches=4, micro_batch=2)
KINDS = ("interleaved_1f1b", "zero_bubble")


def _both_runtimes(rank, world_size, cfg):
    """Ours over each stage-to-stage transport, and torch's, from the same weights; two steps each."""
    from mimo_runtime.bench.runners import both

    out = {}
    for transport in ("gloo", "shm"):
        ours, theirs = both(cfg, rank, slack=rank == 0, transport=transport)
        ours.step(0)
        theirs.step(0)
        ours.step(1)
        theirs.step(1)
        out[transport] = {"ours": [p.detach().clone() for p in ours.module.parameters()],
                          "theirs": [p.detach().clone() for p in theirs.module.parameters()],
                          "loss": (ours.loss, theirs.loss), "stats": vars(ours.executor.stats).copy(),
                          "inbox_idle": ours.executor.inbox.idle(), "shm": ours.executor.local is not None}
    for kind in KINDS:
        ours, theirs = both(replace(cfg, vpp=2, schedule=kind), rank)
        for s in range(2):
            ours.step(s)
            theirs.step(s)
        out[kind] = {"ours": [p.detach().clone() for p in ours.module.parameters()],
                     "theirs": [p.detach().clone() for p in theirs.module.parameters()],
                     "loss": (ours.loss, theirs.loss), "kinds": sorted({a.kind for a in ours.actions})}
    return out


_RESULTS = []


def _results():
    if not _RESULTS:
        _RESULTS.append(spawn(_both_runtimes, 2, (CFG,), timeout_s=240, collective_timeout_s=60))
    return _RESULTS[0]


def test_our_chain_trains_exactly_like_torch_pipelining_without_shape_headers():
    results = _results()
    act = CFG.micro_batch * CFG.hidden * 4
    for transport in ("gloo", "shm"):
        runs = [r[transport] for r in results]
        for r in runs:
            for a, b in zip(r["ours"], r["theirs"]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # same SGD steps from the same gradients
            assert r["stats"]["header_sent"] == 0 and r["stats"]["header_recv"] == 0
            assert r["inbox_idle"]  # every early receive was consumed
            assert r["shm"] == (transport == "shm")
        assert runs[0]["stats"]["payload_recv"] == runs[1]["stats"]["payload_recv"] == 2 * CFG.microbatches * act
        ours_loss, theirs_loss = runs[1]["loss"]
        assert abs(ours_loss - theirs_loss) < 1e-6


def test_interleaved_and_zero_bubble_chains_train_exactly_like_torchs_interleaved_schedules():
    for kind in KINDS:
        for r in _results():
            for a, b in zip(r[kind]["ours"], r[kind]["theirs"]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{kind}: {m}")
            assert ("W" in r[kind]["kinds"]) == (kind == "zero_bubble")
        ours_loss, theirs_loss = _results()[1][kind]["loss"]
        assert abs(ours_loss - theirs_loss) < 1e-6, kind
