"""Portable core attention on torch SDPA: causal, padding masks, packed THD and context
parallelism (model/context_parallel.py), on any device.

megatron's local DotProductAttention needs CUDA (and no THD), and TEDotProductAttention needs
transformer-engine; this one plugs into the same `core_attention` slot of a layer spec.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

from mimo_runtime.model.context_parallel import cp_attention_sbhd, cp_attention_thd


class SDPAttention(MegatronModule):
    """Core attention for megatron's `Attention`: q, k, v in -> context out.

    Shapes follow megatron: q (sq, b, np, hn), k/v (sk, b, ng, hn) -> (sq, b, np*hn); packed THD:
    q (t, np, hn) -> (t, np*hn). `attention_mask` follows megatron too: bool, True = masked out,
    broadcastable to (b, 1, sq, sk); it is combined with the causal mask when the layer is causal.
    """

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: Optional[float] = None,
                 softmax_scale: Optional[float] = None, cp_comm_type: Optional[str] = None,
                 pg_collection=None):
        super().__init__(config=config)
        # context parallelism: K/V all-gathered over the cp group (model/context_parallel.py)
        self.cp_group = pg_collection.cp if pg_collection is not None and config.context_parallel_size > 1 else None
        if config.context_parallel_size > 1 and (self.cp_group is None
                                                 or self.cp_group.size() != config.context_parallel_size):
            raise ValueError(f"SDPAttention: context_parallel_size {config.context_parallel_size} needs a "
                             "pg_collection whose cp group has that size")
        # MegatronModule.sharded_state_dict falls back to parallel_state without a tp_group
        self.tp_group = pg_collection.tp if pg_collection is not None else None
        tp = self.tp_group.size() if self.tp_group is not None else 1
        self.heads = config.num_attention_heads // tp
        self.groups = config.num_query_groups // tp
        self.head_dim = config.kv_channels
        self.causal = attn_mask_type in (AttnMaskType.causal, AttnMaskType.padding_causal)
        self.scale = softmax_scale if softmax_scale is not None else self.head_dim ** -0.5
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params: Optional[PackedSeqParams] = None):
        if attention_bias is not None:
            raise ValueError("SDPAttention does not support attention_bias")
        dropout = self.dropout if self.training else 0.0
        if packed_seq_params is not None and packed_seq_params.qkv_format == "thd":
            if self.cp_group is not None:
                return cp_attention_thd(self, query, key, value, _thd_bounds(packed_seq_params)[0], self.causal,
                                        self.cp_group, dropout)
            return self._thd(query, key, value, packed_seq_params)
        causal = self.causal if attn_mask_type is None else attn_mask_type in (
            AttnMaskType.causal, AttnMaskType.padding_causal)
        if self.cp_group is not None:
            return cp_attention_sbhd(self, query, key, value, _key_padding_mask(attention_mask), causal,
                                     self.cp_group, dropout)
        sq, sk = query.size(0), key.size(0)
        # (s, b, n, d) -> (b, n, s, d)
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        k, v = self._expand_groups(k, 1), self._expand_groups(v, 1)
        allowed = None
        if attention_mask is not None:
            allowed = ~attention_mask.to(torch.bool)
            if causal:
                allowed = allowed & _causal(sq, sk, q.device)
            # a query row with every key masked (e.g. a left-pad position) would give NaN; let
            # it see itself instead: its output is junk either way and the loss masks it.
            allowed = allowed | torch.eye(sq, sk, dtype=torch.bool, device=q.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and allowed is None, scale=self.scale)
        return out.permute(2, 0, 1, 3).reshape(sq, query.size(1), -1)

    def _thd(self, query, key, value, p: PackedSeqParams):
        # One SDPA over the whole pack with a block-diagonal causal mask: segment i attends only
        # to earlier tokens of segment i. Padded boundaries (when given) own the pad tokens.
        cu_q, cu_k = _thd_bounds(p)
        t_q, t_k = query.size(0), key.size(0)
        seg_q = _segments(cu_q, t_q, query.device)
        seg_k = _segments(cu_k, t_k, query.device)
        allowed = seg_q[:, None] == seg_k[None, :]
        if self.causal:
            pos_q = torch.arange(t_q, device=query.device) - cu_q.to(query.device).long()[seg_q]
            pos_k = torch.arange(t_k, device=query.device) - cu_k.to(query.device).long()[seg_k]
            allowed = allowed & (pos_k[None, :] <= pos_q[:, None])
        allowed = allowed | torch.eye(t_q, t_k, dtype=torch.bool, device=query.device)
        q, k, v = (x.permute(1, 0, 2).unsqueeze(0) for x in (query, key, value))  # (1, n, t, d)
        k, v = self._expand_groups(k, 1), self._expand_groups(v, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0, scale=self.scale)
        return out.squeeze(0).permute(1, 0, 2).reshape(t_q, -1)

    def _expand_groups(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        rep = self.heads // self.groups
        return x.repeat_interleave(rep, dim=dim) if rep > 1 else x


def _thd_bounds(p: PackedSeqParams):
    """Padded boundaries when given (the pad tokens belong to their sequence), else the real ones."""
    cu_q = p.cu_seqlens_q_padded if p.cu_seqlens_q_padded is not None else p.cu_seqlens_q
    cu_k = p.cu_seqlens_kv_padded if p.cu_seqlens_kv_padded is not None else p.cu_seqlens_kv
    return cu_q, cu_k


def _key_padding_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    # with CP each rank holds its own keys' mask, (b, 1, 1, sk_local); a full (sq, sk) mask would
    # have to be cut by global position on both axes, which nothing here produces
    if mask is None:
        return None
    if mask.dim() != 4 or mask.size(2) != 1:
        raise ValueError("with context parallelism attention_mask must be a key-padding mask (b, 1, 1, s_local) "
                         f"with True = masked out, got shape {tuple(mask.shape)}")
    return mask.to(torch.bool)


def _causal(sq: int, sk: int, device) -> torch.Tensor:
    # queries are the last sq positions of the sk keys (sq == sk without a KV cache)
    return torch.ones(sq, sk, dtype=torch.bool, device=device).tril(diagonal=sk - sq)


def _segments(cu_seqlens: torch.Tensor, total: int, device) -> torch.Tensor:
    """Segment index of every packed token; tokens past the last boundary get their own segment."""
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    return torch.bucketize(torch.arange(total, device=device), cu[1:], right=True)
