"""A language replica's token batch -> what one of its context-parallel ranks reads.

Padded batches (B, S) keep their rows and take the rank's chunks of every row. Packed batches
(`train.packing`) concatenate each sample's used tokens (through its last loss position; under a
causal mask nothing after it matters), padded per plan/sequence.py, into one THD row (1, T/cp),
and carry `cu_seqlens` (the real lengths), `cu_seqlens_padded` (the layout) and `sample` (each
token's sample index, for the bridge's per-sample row counts). Sequence parallelism needs nothing
here: the model cuts its TP slice of the cp-local sequence itself.
"""

from typing import Dict, List, Tuple

import torch
import torch.distributed as dist

from mimo_runtime.plan import ModulePlan
from mimo_runtime.plan.sequence import SequenceLayout

TOKEN_KEYS = ("input_ids", "labels", "loss_mask", "position_ids")


def used_length(loss_mask: torch.Tensor) -> int:
    """Tokens a sample needs: through its last loss position (at least one)."""
    hits = loss_mask.nonzero()
    return int(hits[-1]) + 1 if hits.numel() else 1


def replica_layout(batch: Dict[str, torch.Tensor], lang: ModulePlan, packed: bool) -> SequenceLayout:
    b, s = batch["input_ids"].shape
    if packed:
        return SequenceLayout.packed_from([used_length(m) for m in batch["loss_mask"]], lang.cp, lang.sequence_shards)
    return SequenceLayout.padded(b, s, lang.cp, lang.sequence_shards)


def cut_tokens(batch: Dict[str, torch.Tensor], layout: SequenceLayout, cp_rank: int) -> Dict[str, torch.Tensor]:
    """The tokens cp rank `cp_rank` of the replica reads."""
    tokens = layout.local_tokens(cp_rank)
    if not layout.packed:
        if layout.cp == 1:
            return batch
        idx = torch.tensor([p for _, p in tokens], dtype=torch.long)
        return {k: v.index_select(1, idx) for k, v in batch.items()}
    seq = batch["input_ids"].size(1)
    out: Dict[str, List] = {k: [] for k in TOKEN_KEYS}
    for i, p in tokens:
        for k in TOKEN_KEYS:
            if k == "position_ids":
                out[k].append(p)
            else:  # positions past the batch's length (the last sequence's padding) read as padding
                out[k].append(batch[k][i, p].item() if p < seq else 0)
    cut = {k: torch.tensor([v], dtype=batch[k].dtype) for k, v in out.items()}
    cut["sample"] = torch.tensor([[i for i, _ in tokens]], dtype=torch.long)
    used = [min(used_length(m), n) for m, n in zip(batch["loss_mask"], layout.lengths)]
    cut["cu_seqlens"] = _cumulative(used)
    cut["cu_seqlens_padded"] = _cumulative(layout.lengths)
    return cut


def _cumulative(lengths) -> torch.Tensor:
    return torch.tensor([0] + list(torch.tensor(list(lengths)).cumsum(0).tolist()), dtype=torch.int32)


def count_cut_captions(logits: torch.Tensor, tokens: Dict[str, torch.Tensor], tp_group, cp_group,
                       num_samples: int) -> Tuple[int, int]:
    """count_captions (train/captions.py) when a sample's tokens are spread over cp ranks or packed:
    per-sample misses and caption tokens are summed over the cp group, and only cp rank 0 reports
    (the evaluation sums the reports of every cp rank)."""
    if tp_group is not None and tp_group.size() > 1:
        parts = [torch.empty_like(logits) for _ in range(tp_group.size())]
        dist.all_gather(parts, logits.contiguous(), group=tp_group)
        logits = torch.cat(parts, dim=-1)
    caption = tokens["loss_mask"] > 0
    miss = (logits.argmax(-1) != tokens["labels"]) & caption
    if "sample" in tokens:
        per = torch.stack([torch.bincount(tokens["sample"][x], minlength=num_samples) for x in (miss, caption)])
    else:
        per = torch.stack([miss.sum(-1), caption.sum(-1)])
    if cp_group is not None and cp_group.size() > 1:
        dist.all_reduce(per, group=cp_group)
        if cp_group.rank() != 0:
            return 0, 0
    captioned = per[1] > 0
    return int((captioned & (per[0] == 0)).sum()), int(captioned.sum())
