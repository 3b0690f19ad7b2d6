"""HF modules as encoders in ModalitySubmodules (upstream's AVLM examples): built from tiny
configs through a spec, no stage keywords, output rows (items * tokens, projected hidden)."""

import pytest
import torch
import torch.nn as nn
from megatron.core.transformer.spec_utils import ModuleSpec

from mimo_runtime.model import AudioModalitySubmodules, VisionModalitySubmodules

HIDDEN, OUT = 32, 48
TINY = dict(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(**TINY, image_size=32, patch_size=8)
    return CLIPVisionModel, cfg, {"pixel_values": torch.rand(3, 3, 32, 32)}, 3 * (16 + 1)  # + class token


def _siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(**TINY, image_size=32, patch_size=8)
    return SiglipVisionModel, cfg, {"pixel_values": torch.rand(2, 3, 32, 32)}, 2 * 16


def _whisper():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(d_model=HIDDEN, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                        num_mel_bins=16, max_source_positions=20)
    return WhisperEncoder, cfg, {"input_features": torch.rand(2, 16, 40)}, 2 * 20


@pytest.mark.parametrize("make", [_clip, _siglip, _whisper], ids=["CLIPVisionModel", "SiglipVisionModel",
                                                                   "WhisperEncoder"])
def test_hf_encoder_in_modality_submodules_gives_projected_rows(make):
    module, cfg, inputs, rows = make()
    cls = AudioModalitySubmodules if "input_features" in inputs else VisionModalitySubmodules
    spec = ModuleSpec(module=cls, submodules={
        "encoders": {"hf": ModuleSpec(module=module, params={"config": cfg})},
        "input_projections": [ModuleSpec(module=nn.Linear, params={"in_features": HIDDEN, "out_features": OUT})]})
    sub = cls.from_spec(spec, is_first_stage=True, is_last_stage=True)
    out = sub({"hf": inputs})
    assert isinstance(sub.encoders["hf"], module) and out.shape == (rows, OUT)
    out.sum().backward()
    # gradients reach the encoder through the flattened rows (pooling heads stay unused)
    assert sum(p.grad is not None for p in sub.encoders["hf"].parameters()) > len(list(sub.encoders["hf"].parameters())) // 2
