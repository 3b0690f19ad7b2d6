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
