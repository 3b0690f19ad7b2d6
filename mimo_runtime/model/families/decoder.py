"""Llama-style decoders (Llama, Mistral, Qwen2) as megatron GPTModels: RMSNorm, SwiGLU
(`gated_linear_unit` + silu), grouped-query attention (`num_query_groups`), optional qkv bias,
tied or untied output, rotary positions with the checkpoint's own (possibly scaled) frequencies."""

from typing import Sequence

import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model.families.dims import DecoderDims
from mimo_runtime.model.families.layers import family_config, family_layer_spec
from mimo_runtime.model.language import LanguageModel
from mimo_runtime.model.sequence_parallel import sequence_parallel_block_spec
from mimo_runtime.model.specs import uses_te


class DecoderLM(LanguageModel):
    """LanguageModel whose rotary frequencies are given: megatron derives them from `rotary_base`
    alone and knows only one fixed llama3 scaling, while HF configs carry any rope settings."""

    def __init__(self, *args, rope_inv_freq: Sequence[float] = (), **kwargs):
        super().__init__(*args, **kwargs)
        rope = getattr(self, "rotary_pos_emb", None)
        if rope is not None and rope_inv_freq:
            if len(rope_inv_freq) != rope.inv_freq.numel():
                raise ValueError(f"rope_inv_freq has {len(rope_inv_freq)} values, the rotary embedding "
                                 f"{rope.inv_freq.numel()}")
            rope.inv_freq = torch.tensor(rope_inv_freq, dtype=torch.float32, device=rope.inv_freq.device)


def decoder_spec(dims: DecoderDims, tp: int, pp: int, pgs, is_first_stage: bool, is_last_stage: bool,
                 backend: str = "auto", recompute: str = "none", cp: int = 1,
                 sequence_parallel: bool = False) -> ModuleSpec:
    """The ModuleSpec of a decoder stage (the language_model_spec of a MimoModelConfig)."""
    config = family_config(hidden=dims.hidden, layers=dims.layers, heads=dims.heads, ffn_hidden=dims.ffn_hidden,
                           kv_heads=dims.kv_heads, head_dim=dims.head_dim, norm="RMSNorm", eps=dims.norm_eps,
                           act="silu", gated=True, bias=False, qkv_bias=dims.qkv_bias, tp=tp, pp=pp,
                           recompute=recompute, cp=cp, sequence_parallel=sequence_parallel)
    spec = family_layer_spec(causal=True, rms_norm=True, backend=backend)
    if sequence_parallel and not uses_te(backend):
        spec = sequence_parallel_block_spec(spec, dims.layers // pp)
    return ModuleSpec(module=DecoderLM, params=dict(
        config=config, transformer_layer_spec=spec, vocab_size=dims.vocab_size,
        max_sequence_length=dims.max_positions, pre_process=is_first_stage, post_process=is_last_stage,
        share_embeddings_and_output_weights=dims.tied, position_embedding_type="rope", pg_collection=pgs,
        scatter_embedding_sequence_parallel=False, rope_inv_freq=tuple(dims.rope_inv_freq)))
