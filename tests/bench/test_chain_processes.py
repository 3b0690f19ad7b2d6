"""Our executor on the benchmark chain: known shapes skip headers, early receives, same result as torch's."""

import torch

from mimo_runtime.bench.chain import ChainConfig
from mimo_runtime.launch.spawn import spawn

CFG = ChainConfig(hidden=16, layers=2, microbatches=4, micro_batch=2)


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
    return out


def test_our_chain_trains_exactly_like_torch_pipelining_without_shape_headers():
    results = spawn(_both_runtimes, 2, (CFG,), timeout_s=240, collective_timeout_s=60)
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
