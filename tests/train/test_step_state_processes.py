"""Per-rank state on real gloo processes (one spawn): activation_peak_mb on a pp2 chain, and gradient
reduction when a replica's module received no gradient."""

from functools import lru_cache

import torch
import torch.distributed as dist

from mimo_runtime.bench.chain import ChainConfig, build_stage
from mimo_runtime.launch.spawn import spawn
from mimo_runtime.train.memory import ActivationMeter

H, ROWS, LAYERS = 32, 4, 2
UNIT = ROWS * H * 4  # one (micro_batch, hidden) fp32 activation


def _module():
    torch.manual_seed(0)  # the same weights on both ranks
    return torch.nn.ModuleDict({"used": torch.nn.Linear(3, 2), "empty": torch.nn.Linear(3, 2),
                                "unused": torch.nn.Linear(3, 2)})


def _items(rank: int, name: str) -> torch.Tensor:
    return torch.arange(6, dtype=torch.float32).reshape(2, 3) + 10 * rank + (name == "empty")


def _reduce_with_an_empty_replica(rank):
    """Rank 1's "empty" encoder got 0 items: it computed nothing, so its parameters have no .grad."""
    from mimo_runtime.train.grads import all_reduce_grads

    model = _module()
    loss = model["used"](_items(rank, "used")).sum()
    if rank == 0:
        loss = loss + model["empty"](_items(rank, "empty")).pow(2).sum()
    loss.backward()
    all_reduce_grads(model.parameters(), dist.group.WORLD)
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def _worker(rank, world_size):
    from mimo_runtime.bench.runners import OursChain

    out = {"grads": _reduce_with_an_empty_replica(rank)}
    for m in (4, 32):
        cfg = ChainConfig(hidden=H, layers=LAYERS, stages=2, microbatches=m, micro_batch=ROWS)
        ours = OursChain(cfg, rank, build_stage(cfg, rank), transport="gloo")
        peaks = []
        for s in range(2):
            ours.step(s)
            meter = ours.executor.memory
            peaks.append((meter.saved_peak, meter.peak, meter.alive))
        out[m] = peaks
    return out


@lru_cache(maxsize=1)
def _results():
    return spawn(_worker, 2, timeout_s=240, collective_timeout_s=60)


def test_saved_activations_follow_pipeline_depth_not_microbatches():
    """1F1B on 2 stages: stage 0 holds 2 microbatches in flight, stage 1 one. Per microbatch a stage
    saves each Linear's input and each GELU's input; the last stage also the loss's two operands."""
    results = [{m: r[m] for m in (4, 32)} for r in _results()]
    want = {0: 2 * (2 * LAYERS) * UNIT, 1: 1 * (2 * LAYERS + 2) * UNIT}
    for rank, per_m in enumerate(results):
        for m, peaks in per_m.items():
            for saved_peak, peak, alive in peaks:
                assert saved_peak == want[rank], (rank, m, saved_peak / UNIT)
                assert alive == 0  # every saved tensor was released by its backward
                assert peak >= saved_peak
    total = {m: max(r[m][-1][1] for r in results) for m in (4, 32)}
    print(f"activation peak incl. sends in flight: m=4 {total[4] / 2**20:.4f} MiB, m=32 {total[32] / 2**20:.4f} MiB, "
          f"growth {total[32] / total[4]:.2f}x")


def test_a_replica_whose_encoder_got_no_items_contributes_zeros():
    """Same buckets on every replica: sums are exact, and a parameter no replica reached keeps None."""
    got = [r["grads"] for r in _results()]
    model = _module()  # the single-process reference: both replicas' losses in one backward
    loss = sum(model["used"](_items(r, "used")).sum() for r in (0, 1)) + model["empty"](_items(0, "empty")).pow(2).sum()
    loss.backward()
    for name, p in model.named_parameters():
        for g in got:
            if p.grad is None:
                assert g[name] is None, name
            else:
                torch.testing.assert_close(g[name], p.grad, rtol=0, atol=1e-6)
    assert got[0]["unused.weight"] is None


def test_a_storage_saved_twice_counts_once_and_leaves_on_release():
    meter = ActivationMeter()
    w = torch.nn.Parameter(torch.randn(8, 8))
    x = torch.randn(4, 8, requires_grad=True)
    with meter.hooks:
        y = x * x  # saves x twice: one region
        z = (y @ w).sum()  # saves y (and w: a parameter, skipped)
    assert meter.alive == 2 * 4 * 8 * 4 and meter.saved_peak == meter.alive
    z.backward()
    assert meter.alive == 0 and meter.saved_peak == 2 * 4 * 8 * 4


def test_send_buffers_in_flight_add_to_the_peak():
    meter = ActivationMeter()
    a = torch.zeros(100)
    meter.observe([a, a[:], torch.zeros(10)])
    assert meter.sending == 440 and meter.peak == 440
    meter.observe([])
    meter.start_step()
    assert meter.peak == 0
