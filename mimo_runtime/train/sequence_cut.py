"""A language replica's token batch -> what one of its context-parallel ranks reads.

Padded batches (B, S) keep their rows and take the rank's chunks of every row. Packed batches
(`train.packing`) concatenate each sample's used tokens (through its last loss position; under a
causal mask nothing after it matters), padded per plan/sequence.py, into one THD row (1, T/cp),
and carry `cu_seqlens` (the real lengths), `cu_seqlens_padded` (the layout) and `sample` (each
token's sample index, for the bridge's per-sample row counts). Sequence parallelism needs nothing
here: the model cuts its TP slice of the cp-local sequence itself.
"""

from typing import Dict, List

import torch

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
