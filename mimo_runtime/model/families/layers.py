"""TransformerConfigs and layer specs of the families: the presets' portable settings (fp32,
dropout 0, no fused kernels, CPU initialization) plus each family's norm, activation, gating,
grouped-query attention and biases."""

import copy
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from mimo_runtime.model.attention import SDPAttention
from mimo_runtime.model.recompute import recompute_fields, use_portable_checkpoint
from mimo_runtime.model.specs import te_available, uses_te


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's activation: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> Callable:
    """The torch function of an HF `hidden_act` name."""
    table = {"quick_gelu": quick_gelu, "gelu": F.gelu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
             "silu": F.silu}
    if name not in table:
        raise ValueError(f"unsupported activation '{name}'; supported: {sorted(table)}")
    return table[name]


def family_config(*, hidden: int, layers: int, heads: int, ffn_hidden: int, kv_heads: int, head_dim: int,
                  norm: str, eps: float, act: str, gated: bool, bias: bool, qkv_bias: bool, tp: int = 1,
                  pp: int = 1, recompute: str = "none", cp: int = 1,
                  sequence_parallel: bool = False) -> TransformerConfig:
    """One family's TransformerConfig. `perform_initialization` stays on (megatron tags TP-split
    weights only on its init path); keyed init or the HF loader then overwrite every value."""
    if recompute != "none" and not te_available():
        use_portable_checkpoint()
    return TransformerConfig(
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_query_groups=kv_heads,
        kv_channels=head_dim, ffn_hidden_size=ffn_hidden, normalization=norm, layernorm_epsilon=eps,
        activation_func=activation(act), gated_linear_unit=gated, add_bias_linear=bias, add_qkv_bias=qkv_bias,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, pipeline_dtype=torch.float32,
        context_parallel_size=cp, sequence_parallel=sequence_parallel,
        params_dtype=torch.float32, use_cpu_initialization=True, perform_initialization=True,
        hidden_dropout=0.0, attention_dropout=0.0,
        bias_activation_fusion=False, bias_dropout_fusion=False, masked_softmax_fusion=False,
        persist_layer_norm=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        **recompute_fields(recompute))


def family_layer_spec(causal: bool, rms_norm: bool, backend: str = "auto") -> ModuleSpec:
    """A transformer layer spec whose norms follow `config.normalization` (LayerNorm or RMSNorm)."""
    if uses_te(backend):
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        spec = copy.deepcopy(get_gpt_layer_with_transformer_engine_spec())
    else:
        # megatron's torch-norm wrapper reads the norm type from the config
        spec = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm" if rms_norm else None))
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    spec.submodules.self_attention.params = {
        "attn_mask_type": AttnMaskType.causal if causal else AttnMaskType.no_mask}
    return spec
