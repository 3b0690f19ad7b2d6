"""Transformer configs and layer specs that run on CPU (portable) or on GPU with transformer-engine.

The portable spec is megatron's local GPT layer with `core_attention` swapped for `SDPAttention`
(megatron's local DotProductAttention needs CUDA). The TE spec is used only when
transformer-engine is installed *and* CUDA is available; both are probed lazily so a CPU run
never imports TE or touches torch.cuda.
"""

import copy
import importlib.util
from functools import lru_cache

import torch
import torch.nn.functional as F
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from mimo_runtime.model.attention import SDPAttention
from mimo_runtime.model.recompute import recompute_fields, use_portable_checkpoint


def transformer_config(hidden: int, heads: int, layers: int, ffn_hidden: int, tp: int = 1,
                       pp: int = 1, recompute: str = "none", cp: int = 1,
                       sequence_parallel: bool = False) -> TransformerConfig:
    """fp32, dropout 0, no fused kernels, parameters created on CPU; `recompute` per model.recompute.

    `perform_initialization` stays on although `mimo_runtime.model.init` overwrites every value:
    megatron tags TP-split weights (partition_dim) only on its init path.
    """
    if recompute != "none" and not te_available():
        use_portable_checkpoint()
    return TransformerConfig(
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, ffn_hidden_size=ffn_hidden,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, pipeline_dtype=torch.float32,
        context_parallel_size=cp, sequence_parallel=sequence_parallel,
        params_dtype=torch.float32, use_cpu_initialization=True, perform_initialization=True,
        hidden_dropout=0.0, attention_dropout=0.0, activation_func=F.gelu, gated_linear_unit=False,
        bias_activation_fusion=False, bias_dropout_fusion=False, masked_softmax_fusion=False,
        persist_layer_norm=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        **recompute_fields(recompute))


@lru_cache(maxsize=1)
def te_available() -> bool:
    """transformer-engine installed and a CUDA device present (TE needs both)."""
    if importlib.util.find_spec("transformer_engine") is None:
        return False
    return torch.cuda.is_available()


def uses_te(backend: str) -> bool:
    """backend: "auto" (TE when `te_available()`, else portable), "portable" or "te"."""
    if backend not in ("auto", "portable", "te"):
        raise ValueError(f"backend must be auto, portable or te, got '{backend}'")
    return backend == "te" or (backend == "auto" and te_available())


def layer_spec(causal: bool, backend: str = "auto") -> ModuleSpec:
    """A transformer layer spec; `causal` for the language model, bidirectional for encoders.

    backend: "auto" (TE when `te_available()`, else portable), "portable" or "te".
    """
    if uses_te(backend):
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        spec = copy.deepcopy(get_gpt_layer_with_transformer_engine_spec())
    else:
        spec = copy.deepcopy(get_gpt_layer_local_spec())
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    spec.submodules.self_attention.params = {
        "attn_mask_type": AttnMaskType.causal if causal else AttnMaskType.no_mask}
    return spec
