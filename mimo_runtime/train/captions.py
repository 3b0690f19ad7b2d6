"""Caption accuracy on the last language stage, from vocab-parallel logits."""

from typing import Dict, Tuple

import torch
import torch.distributed as dist


def count_captions(logits: torch.Tensor, tokens: Dict[str, torch.Tensor], tp_group) -> Tuple[int, int]:
    """(samples whose caption is exactly the argmax, samples with a caption) for one microbatch.

    Each TP rank holds a slice of the vocabulary (B, S, V/tp); the argmax needs all of it, so the
    slices are gathered in rank order first (ties then break exactly as on the full logits)."""
    from mimo_runtime.data import caption_accuracy

    if tp_group is not None and tp_group.size() > 1:
        parts = [torch.empty_like(logits) for _ in range(tp_group.size())]
        dist.all_gather(parts, logits.contiguous(), group=tp_group)
        logits = torch.cat(parts, dim=-1)
    captioned = int((tokens["loss_mask"] > 0).any(-1).sum())
    return round(caption_accuracy(logits, tokens) * captioned), captioned
