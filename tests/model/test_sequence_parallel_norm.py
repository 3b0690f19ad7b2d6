"""The portable SP norm slot builds the config's norm (LayerNorm or RMSNorm, as megatron's torch-norm
wrapper does) with its parameters tagged for the TP gradient sum; other norms are refused."""

import pytest
import torch
from megatron.core.transformer.transformer_config import TransformerConfig

from mimo_runtime.model.sequence_parallel import SequenceParallelNorm


def _config(norm):
    return TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=2, normalization=norm,
                             tensor_model_parallel_size=2, sequence_parallel=True, use_cpu_initialization=True)


@pytest.mark.parametrize("norm, cls", [("LayerNorm", torch.nn.LayerNorm), ("RMSNorm", torch.nn.RMSNorm)])
def test_sp_norm_is_the_configs_norm_with_tagged_parameters(norm, cls):
    layer = SequenceParallelNorm(_config(norm), 8, eps=1e-6)
    assert type(layer) is cls and layer.eps == 1e-6
    assert all(p.sequence_parallel for p in layer.parameters())


def test_sp_norm_refuses_other_norms():
    config = _config("LayerNorm")
    config.normalization = "L2Norm"
    with pytest.raises(ValueError, match="supports LayerNorm and RMSNorm, got L2Norm"):
        SequenceParallelNorm(config, 8)
