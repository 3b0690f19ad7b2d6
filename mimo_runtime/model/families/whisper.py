"""Whisper's audio encoder (transformers' `WhisperEncoder`) as a staged megatron encoder.

The first stage embeds: conv1 (kernel 3, stride 1) + GELU, conv2 (kernel 3, stride 2) + GELU, both
in HF's Conv1d layout so loading is a copy, then the fixed sinusoidal `embed_positions` (a
parameter that never trains, as in HF, so checkpoints and export carry the checkpoint's own
values). Every stage runs its share of the megatron layers (pre-LN, GELU MLP); the last stage
applies the block's final norm, Whisper's `layer_norm`. Whisper's k_proj has no bias: megatron's
fused linear_qkv has one bias for q, k and v, whose k rows are loaded as zeros (hf/names.py).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model.encoders import StagedEncoder, _check_input
from mimo_runtime.model.families.dims import ProjectorDims, WhisperDims
from mimo_runtime.model.families.layers import family_config
from mimo_runtime.model.families.vit import encoder_modality_spec
from mimo_runtime.model.submodules import AudioModalitySubmodules

# modality_inputs key of a Whisper encoder and its input tensor (transformers' names)
WHISPER_KEY, WHISPER_INPUT = "audio_tower", "input_features"


class WhisperEncoder(StagedEncoder):
    """Whisper over `input_features` (clips, mels, frames) -> rows (clips * frames / 2, hidden)."""

    def __init__(self, config, layer_spec: ModuleSpec, pg_collection, dims: WhisperDims, modality: str = "audio",
                 pre_process: bool = True, post_process: bool = True):
        super().__init__(config, layer_spec, pg_collection, modality, dims.tokens_per_item, pre_process,
                         post_process)
        self.dims = dims
        h = config.hidden_size
        if pre_process:
            self.conv1 = torch.nn.Conv1d(dims.mels, h, kernel_size=3, padding=1)
            self.conv2 = torch.nn.Conv1d(h, h, kernel_size=3, stride=2, padding=1)
            self.embed_positions = torch.nn.Parameter(torch.empty(dims.positions, h), requires_grad=False)

    def embed(self, input_features: Optional[torch.Tensor] = None, **extra) -> torch.Tensor:
        d = self.dims
        _check_input(self.modality, WHISPER_INPUT, input_features, extra, (d.mels, d.frames))
        x = input_features.to(self.conv1.weight.dtype)
        x = F.gelu(self.conv2(F.gelu(self.conv1(x))))  # (clips, hidden, positions); HF's exact GELU, whatever the layers use
        return x.permute(2, 0, 1) + self.embed_positions[:, None, :]


def whisper_config(dims: WhisperDims, tp: int = 1, pp: int = 1, recompute: str = "none"):
    return family_config(hidden=dims.hidden, layers=dims.layers, heads=dims.heads, ffn_hidden=dims.ffn_hidden,
                         kv_heads=dims.heads, head_dim=dims.hidden // dims.heads, norm="LayerNorm",
                         eps=dims.norm_eps, act=dims.act, gated=False, bias=True, qkv_bias=True, tp=tp, pp=pp,
                         recompute=recompute)


def audio_spec(name: str, dims: WhisperDims, projector: ProjectorDims, tp: int, pp: int, pgs,
               backend: str = "auto", recompute: str = "none") -> ModuleSpec:
    """A modality submodule: the Whisper encoder (split over `pp` stages) + the projector."""
    return encoder_modality_spec(AudioModalitySubmodules, WHISPER_KEY, WhisperEncoder,
                                 whisper_config(dims, tp, pp, recompute), name, dims, projector, tp, pgs, backend)
