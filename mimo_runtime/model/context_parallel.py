"""Context parallelism for the portable attention: K/V all-gathered over the cp group.

Each cp rank holds 2 of the 2*cp chunks of every sequence (plan/sequence.py: the load-balanced
causal split). Attention needs every earlier key, so K and V (and the key-padding mask) are
all-gathered across the cp group and each rank attends its own queries to all keys under a mask
built from *global* positions: causal (key position <= query position), same packed sequence
(THD), and not padding. The gather's backward sums the key/value gradients of every rank's
queries and keeps this rank's slice, so gradients are exact. All-gather rather than a ring: one
collective per tensor and exact on any backend; transformer-engine's ring (p2p) CP is what runs on
GPU when the TE layer spec is used (model/specs.py).

Sequences whose length is not a multiple of 2*cp are padded at the end (`pad_for_cp`) and the
padding masked out as keys; under a causal mask real queries never see it anyway.
"""

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from mimo_runtime.plan.sequence import local_indices, pad_multiple


class _GatherSequence(torch.autograd.Function):
    """All-gather along dim 0 in cp-rank order; backward: sum over ranks, keep this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(group.size())]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # gloo has no reduce-scatter: all-reduce, then slice (same result, more bytes)
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad.chunk(ctx.group.size(), dim=0)[ctx.group.rank()], None


def gather_sequence(x: torch.Tensor, group) -> torch.Tensor:
    """(s, ...) on each cp rank -> (cp*s, ...), differentiable."""
    return _GatherSequence.apply(x, group)


def _gather_plain(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(group.size())]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def sbhd_positions(local_len: int, cp: int, device) -> List[torch.Tensor]:
    """Global positions of every cp rank's local tokens of one (B, S) row, by cp rank."""
    if local_len % 2:
        raise ValueError(f"a cp rank holds 2 chunks per sequence; its local length {local_len} is odd")
    return [torch.tensor(local_indices(local_len * cp, cp, r), dtype=torch.long, device=device)
            for r in range(cp)]


def thd_positions(cu_seqlens: torch.Tensor, cp: int, device) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(sequence index, position within the sequence) of every cp rank's local packed tokens."""
    bounds = cu_seqlens.tolist()
    out = []
    for r in range(cp):
        seg, pos = [], []
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            idx = local_indices(hi - lo, cp, r)
            seg += [i] * len(idx)
            pos += idx
        out.append((torch.tensor(seg, dtype=torch.long, device=device),
                    torch.tensor(pos, dtype=torch.long, device=device)))
    return out


def _attend(q, k, v, allowed, dropout: float, scale: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=scale)


def cp_attention_sbhd(attn, query, key, value, key_mask: Optional[torch.Tensor], causal: bool,
                      group, dropout: float) -> torch.Tensor:
    """q (sq, b, np, hn), k/v (sk, b, ng, hn) local -> (sq, b, np*hn).

    key_mask: None or bool (b, 1, 1, sk) with True = masked out (this rank's keys)."""
    cp, rank = group.size(), group.rank()
    sq, b = query.size(0), query.size(1)
    if key.size(0) != sq:
        raise ValueError(f"context parallel attention needs as many keys as queries per rank, got {key.size(0)} "
                         f"keys and {sq} queries")
    k = gather_sequence(key, group)
    v = gather_sequence(value, group)
    pos = sbhd_positions(sq, cp, query.device)
    pos_q, pos_k = pos[rank], torch.cat(pos)
    allowed = pos_k[None, :] <= pos_q[:, None] if causal else torch.ones(sq, cp * sq, dtype=torch.bool,
                                                                          device=query.device)
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & ~_gather_plain(key_mask, group, dim=-1)
    # a query whose keys are all masked (a padding query) would give NaN: let it see itself
    own = torch.arange(sq, device=query.device) + rank * sq
    allowed = allowed | F.one_hot(own, cp * sq).to(torch.bool)[None, None]
    q, k, v = (x.permute(1, 2, 0, 3) for x in (query, k, v))  # (b, n, s, d)
    k, v = attn._expand_groups(k, 1), attn._expand_groups(v, 1)
    out = _attend(q, k, v, allowed, dropout, attn.scale)
    return out.permute(2, 0, 1, 3).reshape(sq, b, -1)


def cp_attention_thd(attn, query, key, value, cu_seqlens: torch.Tensor, causal: bool, group,
                     dropout: float) -> torch.Tensor:
    """Packed: q (t, np, hn), k/v (t, ng, hn) local; cu_seqlens of the whole (global) pack."""
    cp, rank = group.size(), group.rank()
    t = query.size(0)
    if int(cu_seqlens[-1]) != t * cp:
        raise ValueError(f"packed sequences with context parallelism: cu_seqlens ends at {int(cu_seqlens[-1])}, "
                         f"expected {t * cp} (cp={cp} ranks x {t} local tokens)")
    k = gather_sequence(key, group)
    v = gather_sequence(value, group)
    parts = thd_positions(cu_seqlens, cp, query.device)
    seg_q, pos_q = parts[rank]
    seg_k, pos_k = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    allowed = seg_q[:, None] == seg_k[None, :]
    if causal:
        allowed = allowed & (pos_k[None, :] <= pos_q[:, None])
    own = torch.arange(t, device=query.device) + rank * t
    allowed = allowed | F.one_hot(own, cp * t).to(torch.bool)
    q, k, v = (x.permute(1, 0, 2).unsqueeze(0) for x in (query, k, v))  # (1, n, t, d)
    k, v = attn._expand_groups(k, 1), attn._expand_groups(v, 1)
    out = _attend(q, k, v, allowed, dropout, attn.scale)
    return out.squeeze(0).permute(1, 0, 2).reshape(t, -1)


def pad_for_cp(x: torch.Tensor, dim: int, cp: int, value=0) -> torch.Tensor:
    """Pad `x` at the end of `dim` to a multiple of 2*cp (the split needs whole chunks)."""
    extra = -x.size(dim) % pad_multiple(cp)
    if not extra:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def split_for_cp(x: torch.Tensor, dim: int, cp: int, cp_rank: int) -> torch.Tensor:
    """This cp rank's chunks of `x` along `dim` (length a multiple of 2*cp), in local order."""
    idx = torch.tensor(local_indices(x.size(dim), cp, cp_rank), dtype=torch.long, device=x.device)
    return x.index_select(dim, idx)
