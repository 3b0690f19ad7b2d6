"""SDPAttention against a naive softmax reference; the vocab-parallel loss against torch's (tp=1)."""

import math

import pytest
import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnMaskType

from mimo_runtime.model import SDPAttention, masked_token_loss_sum, vocab_parallel_cross_entropy
from mimo_runtime.model.specs import transformer_config
from tests.model.fakes import fake_pgs

HEADS, D = 4, 8


def _attention(causal: bool, groups: int = HEADS) -> SDPAttention:
    config = transformer_config(HEADS * D, HEADS, 1, 64)
    config.num_query_groups = groups
    kind = AttnMaskType.causal if causal else AttnMaskType.no_mask
    return SDPAttention(config, 1, kind, "self", pg_collection=fake_pgs())


def _naive(q, k, v, allowed):
    """q, k, v: (s, b, n, d); allowed: (b, 1, sq, sk) bool."""
    scores = torch.einsum("qbnd,kbnd->bnqk", q, k) / math.sqrt(q.size(-1))
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("bnqk,kbnd->qbnd", probs, v).flatten(2)


def _qkv(s, b, kv_heads=HEADS):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(s, b, HEADS, D, generator=g), torch.randn(s, b, kv_heads, D, generator=g),
            torch.randn(s, b, kv_heads, D, generator=g))


def test_causal_matches_naive():
    q, k, v = _qkv(6, 2)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 1, 6, 6)
    torch.testing.assert_close(_attention(True)(q, k, v, None), _naive(q, k, v, allowed))


def test_bidirectional_matches_naive():
    q, k, v = _qkv(5, 3)
    everything = torch.ones(3, 1, 5, 5, dtype=torch.bool)
    torch.testing.assert_close(_attention(False)(q, k, v, None), _naive(q, k, v, everything))


def test_padding_mask_is_combined_with_causal():
    q, k, v = _qkv(6, 2)
    masked_out = torch.zeros(2, 1, 1, 6, dtype=torch.bool)
    masked_out[1, ..., 4:] = True  # sample 1 has two padding keys
    out = _attention(True)(q, k, v, masked_out)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril() & ~masked_out
    torch.testing.assert_close(out[:4], _naive(q, k, v, allowed)[:4])
    assert torch.isfinite(out).all()


def test_grouped_query_attention_repeats_kv_heads():
    q, k, v = _qkv(4, 1, kv_heads=2)
    allowed = torch.ones(4, 4, dtype=torch.bool).tril().expand(1, 1, 4, 4)
    expected = _naive(q, k.repeat_interleave(2, 2), v.repeat_interleave(2, 2), allowed)
    torch.testing.assert_close(_attention(True, groups=2)(q, k, v, None), expected)


def test_packed_thd_attends_within_each_sequence_causally():
    lengths = [3, 5, 2]
    q, k, v = (x[:, 0] for x in _qkv(sum(lengths), 1))  # (t, n, d)
    cu = torch.tensor([0, 3, 8, 10], dtype=torch.int32)
    out = _attention(True)(q, k, v, None, packed_seq_params=PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu))
    assert out.shape == (10, HEADS * D)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        n = end - start
        seg = [x[start:end, None] for x in (q, k, v)]
        expected = _naive(*seg, torch.ones(n, n, dtype=torch.bool).tril().expand(1, 1, n, n))[:, 0]
        torch.testing.assert_close(out[start:end], expected)


def test_cross_entropy_and_its_gradient_match_torch():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    ours = vocab_parallel_cross_entropy(logits, labels, None)
    ref_logits = logits.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_logits.reshape(-1, 11), labels.reshape(-1), reduction="none").reshape(2, 5)
    torch.testing.assert_close(ours, ref)
    weights = torch.rand(2, 5)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_masked_token_loss_sum_counts_only_masked_tokens():
    logits = torch.randn(2, 4, 7)
    labels = torch.randint(0, 7, (2, 4))
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float)
    per_token = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="none").reshape(2, 4)
    torch.testing.assert_close(masked_token_loss_sum(logits, labels, mask, None), (per_token * mask).sum())


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"labels shape \(2, 3\) does not match logits \(2, 4\)"):
        vocab_parallel_cross_entropy(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long), None)
