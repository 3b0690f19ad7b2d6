"""Activation recompute: `recompute: none|full|selective` -> megatron's TransformerConfig fields.

full: every layer recomputed in backward (recompute_granularity full, method uniform, 1 layer per
chunk); selective: megatron's core-attention recompute. megatron's `tensor_parallel.checkpoint`
saves and restores the CUDA RNG states, which a CPU build cannot do, so on the portable (CPU)
backend it is replaced by torch's non-reentrant checkpoint, which restores the CPU RNG itself
(dropout is 0 in the presets anyway). With transformer-engine on GPU megatron's own is kept.
"""

from typing import Dict

import megatron.core.tensor_parallel as tensor_parallel
import torch.utils.checkpoint

RECOMPUTE = ("none", "full", "selective")


def recompute_fields(recompute: str) -> Dict[str, object]:
    if recompute not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}, got {recompute!r}")
    if recompute == "full":
        return dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    if recompute == "selective":
        return dict(recompute_granularity="selective", recompute_modules=["core_attn"])
    return {}


def portable_checkpoint(function, distribute_saved_activations: bool, *args):
    """megatron's `tensor_parallel.checkpoint` signature on torch.utils.checkpoint."""
    if distribute_saved_activations:
        raise ValueError("distribute_saved_activations needs megatron's CUDA checkpoint")
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)


def use_portable_checkpoint() -> None:
    """Route megatron's layer and core-attention recompute through `portable_checkpoint`.

    megatron calls `tensor_parallel.checkpoint` through the package attribute at run time
    (transformer_block, attention), so replacing that attribute is the one hook it offers.
    """
    tensor_parallel.checkpoint = portable_checkpoint
