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
