"""Rank functions the metrics tests spawn (module level, so `spawn` can import them)."""


def captions_over_tp(rank: int, world_size: int):
    """count_captions with each rank holding a vocab slice vs caption_accuracy on the full logits."""
    import torch
    import torch.distributed as dist

    from mimo_runtime.data import caption_accuracy
    from mimo_runtime.train.captions import count_captions

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 16, (6, 5), generator=g)
    mask = torch.ones(6, 5)
    mask[5] = 0  # a sample without a caption is not counted
    logits = torch.randn(6, 5, 16, generator=g)
    logits.scatter_(-1, labels.unsqueeze(-1), 9.0)  # every token right ...
    logits[0, 2, (labels[0, 2] + 9) % 16] = 10.0  # ... but one in sample 0, whose winner is on the other slice
    logits[1, 1, (labels[1, 1] + 1) % 16] = 10.0  # ... and one in sample 1 (maybe the same slice)
    tokens = {"labels": labels, "loss_mask": mask}
    part = logits.chunk(world_size, dim=-1)[rank]
    got = count_captions(part, tokens, dist.group.WORLD)
    return got, caption_accuracy(logits, tokens)


def message_order_on_the_trace_clock(rank: int, world_size: int, trials: int = 20):
    """`trials` times: map the clocks (TraceRecorder), then rank 0 sends and rank 1 receives one tensor.
    Rank 0 gets, per trial, (receive end - send start on the common clock, rank 1's clock error bound)."""
    import time

    import torch
    import torch.distributed as dist

    from mimo_runtime.train.trace import TraceRecorder

    out = []
    for _ in range(trials):
        rec = TraceRecorder(rank)
        buf = torch.zeros(1)
        if rank == 0:
            start = time.perf_counter() - rec.origin
            dist.send(buf, dst=1)
        else:
            dist.recv(buf, src=0)
            start = time.perf_counter() - rec.origin  # the receive's end
        both = [None] * world_size
        dist.all_gather_object(both, (start, rec.clock_error))
        out.append((both[1][0] - both[0][0], both[1][1]))
    return out


def skip_nonfinite_run(rank: int, world_size: int):
    """Rank 0's metrics of 3 steps of images -> language with `train.skip_nonfinite: true` and a NaN loss
    injected in step 2 on rank 1 (the language model)."""
    import os

    from mimo_runtime.train.loop import RunConfig, train_rank
    from mimo_runtime.train.nonfinite import NAN_ENV
    from tests.train.equivalence import topology

    topo = topology("tiny-vlm", {"images": {"kind": "encoder", "ranks": 1}, "language": {"kind": "language", "ranks": 1}},
                    skip_nonfinite=True)
    os.environ[NAN_ENV] = "1:1:loss"
    return train_rank(rank, world_size, topo, RunConfig(steps=3, seed=7, nproc=2, timeout_s=30, progress=False)).metrics


def two_rank_checks(rank: int, world_size: int):
    """The metrics tests' 2-rank scenarios in one launch (a launch costs seconds of imports per rank)."""
    return {"captions": captions_over_tp(rank, world_size), "order": message_order_on_the_trace_clock(rank, world_size),
            "skip": skip_nonfinite_run(rank, world_size)}
