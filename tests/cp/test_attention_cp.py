"""Attention with context parallelism (cp=2, K/V all-gathered) equals cp=1, forward and gradients:
padded (B, S) batches whose length is no multiple of 2*cp, key-padding masks, bidirectional
attention, and packed THD sequences; caption counts over a cp-split batch."""

import dataclasses
from types import SimpleNamespace

import torch

from mimo_runtime.launch.spawn import spawn

HEADS, HEAD_DIM, CP = 4, 8, 2


def _attention(cp_group, causal: bool):
    from megatron.core.transformer.enums import AttnMaskType

    from mimo_runtime.model.attention import SDPAttention
    from mimo_runtime.model.specs import transformer_config

    config = transformer_config(HEADS * HEAD_DIM, HEADS, 1, 4 * HEADS * HEAD_DIM)
    if cp_group is not None:
        config = dataclasses.replace(config, context_parallel_size=cp_group.size())
    mask_type = AttnMaskType.causal if causal else AttnMaskType.no_mask
    return SDPAttention(config, 1, mask_type, "self", pg_collection=SimpleNamespace(tp=None, cp=cp_group))


def _qkv(seed: int, s: int, b):
    g = torch.Generator().manual_seed(seed)
    shape = (s, HEADS, HEAD_DIM) if b is None else (s, b, HEADS, HEAD_DIM)
    return [torch.randn(shape, generator=g) for _ in range(3)]


def _run(attn, q, k, v, weight, **kw):
    q, k, v = (x.clone().requires_grad_(True) for x in (q, k, v))
    out = attn(q, k, v, **kw)
    (out * weight).sum().backward()
    return out.detach(), [x.grad for x in (q, k, v)]


def _padded_case(group, causal: bool, seq: int, keep: torch.Tensor):
    """(B, S) batch of length `seq` with key-padding mask `keep` (B, S), 1 = real token."""
    from mimo_runtime.model.context_parallel import pad_for_cp, split_for_cp

    b = keep.size(0)
    q, k, v = _qkv(seq, seq, b)
    weight = torch.randn(seq, b, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(1))
    weight = weight * keep.t()[..., None]  # padding queries give junk; nothing reads it
    masked = ~keep.to(torch.bool)[:, None, None, :]
    ref_out, ref_grads = _run(_attention(None, causal), q, k, v, weight, attention_mask=masked)

    rank = group.rank()

    def local(x, dim, value=0):
        return split_for_cp(pad_for_cp(x, dim, CP, value), dim, CP, rank)

    local_mask = ~local(keep, 1, 0).to(torch.bool)[:, None, None, :]  # the padding added for CP is masked too
    out, grads = _run(_attention(group, causal), local(q, 0), local(k, 0), local(v, 0), local(weight, 0),
                      attention_mask=local_mask)
    real = local(keep, 1, 0).t().to(torch.bool)  # (s_local, b)
    torch.testing.assert_close(out[real], local(ref_out, 0)[real], rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, local(want, 0), rtol=1e-5, atol=1e-6)


def _packed_case(group):
    from megatron.core.packed_seq_params import PackedSeqParams

    from mimo_runtime.model.context_parallel import split_for_cp

    lengths = [8, 4, 12]  # each a multiple of 2*cp, as the feeder pads them
    total = sum(lengths)
    q, k, v = _qkv(3, total, None)
    weight = torch.randn(total, HEADS * HEAD_DIM, generator=torch.Generator().manual_seed(2))
    cu = torch.tensor([0, 8, 12, 24], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=12, max_seqlen_kv=12)
    ref_out, ref_grads = _run(_attention(None, True), q, k, v, weight, attention_mask=None, packed_seq_params=params)

    rank = group.rank()
    bounds = cu.tolist()

    def local(x):  # each sequence split on its own, pieces concatenated
        return torch.cat([split_for_cp(x[lo:hi], 0, CP, rank) for lo, hi in zip(bounds[:-1], bounds[1:])])

    out, grads = _run(_attention(group, True), local(q), local(k), local(v), local(weight), attention_mask=None,
                      packed_seq_params=params)
    torch.testing.assert_close(out, local(ref_out), rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, local(want), rtol=1e-5, atol=1e-6)


def _captions_case(group):
    """Caption exact-match counts when each sample is spread over the cp ranks (padded, then packed)."""
    from mimo_runtime.model.context_parallel import split_for_cp
    from mimo_runtime.train.sequence_cut import count_cut_captions

    labels = torch.arange(24).reshape(3, 8) % 5
    loss_mask = torch.zeros(3, 8)
    loss_mask[:, 3:7] = 1.0
    logits = torch.nn.functional.one_hot(labels, 5).float()
    logits[1, 5] = torch.nn.functional.one_hot(labels[1, 5] + 1, 5).float()  # sample 1 misses, on cp rank 1
    rank = group.rank()
    local = {"labels": split_for_cp(labels, 1, CP, rank), "loss_mask": split_for_cp(loss_mask, 1, CP, rank)}
    got = count_cut_captions(split_for_cp(logits, 1, CP, rank), local, None, group, 3)
    assert got == ((2, 3) if rank == 0 else (0, 0)), got
    packed = {"labels": torch.cat([split_for_cp(x, 0, CP, rank) for x in labels])[None],
              "loss_mask": torch.cat([split_for_cp(x, 0, CP, rank) for x in loss_mask])[None],
              "sample": torch.tensor([[i] * 4 for i in range(3)]).reshape(1, 12)}
    packed_logits = torch.cat([split_for_cp(x, 0, CP, rank) for x in logits])[None]
    got = count_cut_captions(packed_logits, packed, None, group, 3)
    assert got == ((2, 3) if rank == 0 else (0, 0)), got


def _worker(rank, world):
    import torch.distributed as dist

    torch.set_num_threads(1)
    group = dist.new_group([0, 1])
    keep = torch.ones(3, 13)
    keep[1, 10:] = 0  # right padding
    keep[2, :4] = 0  # left padding
    _padded_case(group, True, 13, torch.ones(2, 13))  # length 13: padded to 16 for cp=2
    _padded_case(group, True, 13, keep)
    _padded_case(group, False, 13, keep)  # bidirectional: the CP padding must be masked as keys
    _padded_case(group, True, 16, keep[:, :13].repeat(1, 2)[:, :16])
    _packed_case(group)
    _captions_case(group)
    return True


def test_attention_cp2_matches_cp1_with_padding_masks_and_packed_sequences():
    assert spawn(_worker, CP, timeout_s=120, collective_timeout_s=30) == [True, True]
