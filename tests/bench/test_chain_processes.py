"""Our executor on the benchmark chain: known shapes skip headers, early receives, same result as torch's."""

import torch

from mimo_runtime.bench.chain import ChainConfig
from mimo_runtime.launch.spawn import spawn

CFG = ChainConfig(hidden=16, layers=2, microbatches=4, micro_batch=2)


def _both_runtimes(rank, world_size, cfg):
    from mimo_runtime.bench.runners import both

    ours, theirs = both(cfg, rank, slack=rank == 0)
    ours.step(0)
    theirs.step(0)
    ours.step(1)
    theirs.step(1)
    stats = vars(ours.executor.stats).copy()
    return {"ours": [p.detach().clone() for p in ours.module.parameters()],
            "theirs": [p.detach().clone() for p in theirs.module.parameters()],
            "loss": (ours.loss, theirs.loss), "stats": stats, "inbox_idle": ours.executor.inbox.idle()}


def test_our_chain_trains_exactly_like_torch_pipelining_without_shape_headers():
    results = spawn(_both_runtimes, 2, (CFG,), timeout_s=240, collective_timeout_s=60)
    for r in results:
        for a, b in zip(r["ours"], r["theirs"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # same SGD steps from the same gradients
        assert r["stats"]["header_sent"] == 0 and r["stats"]["header_recv"] == 0
        assert r["inbox_idle"]  # every early receive was consumed
    act = CFG.micro_batch * CFG.hidden * 4
    assert results[0]["stats"]["payload_recv"] == results[1]["stats"]["payload_recv"] == 2 * CFG.microbatches * act
    ours_loss, theirs_loss = results[1]["loss"]
    assert abs(ours_loss - theirs_loss) < 1e-6
