"""Preset registry: model dimensions by name.

Pure data so topology validation can check parallel sizes (tp against heads, pp against layers)
and the auto-planner and memory model (mimo_runtime/autoplan/memory.py) can size real models
without importing torch. `mimo_runtime/model/presets.py` builds the tiny presets; the presets with
real dimensions (LLaVA-1.5-7B/13B, SigLIP-so400m + Qwen2-7B, Llama-3-8B) are for `plan`,
`plan --auto` and memory estimates only: their weights come from HuggingFace directories.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional


@dataclass(frozen=True)
class EncoderDims:
    modality: str  # "images" or "audio": selects the submodule family
    hidden: int
    heads: int
    layers: int
    tokens_per_item: int  # embeddings one image / clip contributes to the language sequence
    max_items: int  # most items (images, clips) one sample may carry
    family: str = "tiny"  # tiny | clip | siglip | whisper: the input stem and norms around the layers
    ffn_hidden: Optional[int] = None  # None: 4 x hidden
    in_channels: int = 1  # image channels, or mel bins for audio
    patch: int = 4  # image patch side (images only)
    positions: Optional[int] = None  # position embeddings; None: tokens_per_item (CLIP's adds the class token)

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or 4 * self.hidden

    @property
    def num_positions(self) -> int:
        return self.positions or self.tokens_per_item


@dataclass(frozen=True)
class LanguageDims:
    hidden: int
    heads: int
    layers: int
    ffn_hidden: int
    vocab_size: int
    seq_length: int
    query_groups: Optional[int] = None  # grouped-query attention's kv heads; None: one per head
    gated: bool = False  # SwiGLU (silu, gated_linear_unit) instead of a GELU MLP
    norm: str = "layernorm"  # layernorm | rmsnorm
    tied: bool = True  # output layer shares the word embedding
    linear_bias: bool = True  # biases on every linear layer (megatron's default; Llama/Qwen2 have none)
    qkv_bias: bool = False  # a bias on the qkv projection alone (Qwen2)
    rotary_base: int = 10000

    @property
    def kv_heads(self) -> int:
        return self.query_groups or self.heads


@dataclass(frozen=True)
class PresetDims:
    name: str
    language: LanguageDims
    encoders: Mapping[str, EncoderDims] = field(default_factory=dict)


_IMAGES = EncoderDims(modality="images", hidden=32, heads=4, layers=2, tokens_per_item=4, max_items=2)
_AUDIO = EncoderDims(modality="audio", hidden=32, heads=4, layers=2, tokens_per_item=8, max_items=1, in_channels=16)
_LANGUAGE = LanguageDims(hidden=64, heads=4, layers=4, ffn_hidden=256, vocab_size=64, seq_length=32)
# the Llama family in miniature: RMSNorm, SwiGLU, grouped-query attention, untied output, no biases
_LLAMA = LanguageDims(hidden=64, heads=4, layers=4, ffn_hidden=96, vocab_size=64, seq_length=32, query_groups=2,
                      gated=True, norm="rmsnorm", tied=False, linear_bias=False, rotary_base=500000)
_QWEN2 = LanguageDims(hidden=64, heads=4, layers=4, ffn_hidden=96, vocab_size=64, seq_length=32, query_groups=2,
                      gated=True, norm="rmsnorm", tied=True, linear_bias=False, qkv_bias=True, rotary_base=1000000)

# Real dimensions (HF config.json of each model). The language sequence is the training length
# (LLaVA-1.5 trains at 2048); image tokens are CLIP's 24 x 24 patches without the class token
# (vision_feature_select_strategy "default") and SigLIP's 27 x 27.
_CLIP_L_336 = EncoderDims(modality="images", hidden=1024, heads=16, layers=24, tokens_per_item=576, max_items=1,
                          family="clip", ffn_hidden=4096, in_channels=3, patch=14, positions=577)
_SIGLIP_SO400M = EncoderDims(modality="images", hidden=1152, heads=16, layers=27, tokens_per_item=729, max_items=1,
                             family="siglip", ffn_hidden=4304, in_channels=3, patch=14)
_VICUNA_7B = LanguageDims(hidden=4096, heads=32, layers=32, ffn_hidden=11008, vocab_size=32064, seq_length=2048,
                          gated=True, norm="rmsnorm", tied=False, linear_bias=False)
_VICUNA_13B = LanguageDims(hidden=5120, heads=40, layers=40, ffn_hidden=13824, vocab_size=32064, seq_length=2048,
                           gated=True, norm="rmsnorm", tied=False, linear_bias=False)
_QWEN2_7B = LanguageDims(hidden=3584, heads=28, layers=28, ffn_hidden=18944, vocab_size=152064, seq_length=4096,
                         query_groups=4, gated=True, norm="rmsnorm", tied=False, linear_bias=False, qkv_bias=True,
                         rotary_base=1000000)
_LLAMA3_8B = LanguageDims(hidden=4096, heads=32, layers=32, ffn_hidden=14336, vocab_size=128256, seq_length=8192,
                          query_groups=8, gated=True, norm="rmsnorm", tied=False, linear_bias=False,
                          rotary_base=500000)

PRESETS: Dict[str, PresetDims] = {
    "tiny-vlm": PresetDims("tiny-vlm", _LANGUAGE, {"images": _IMAGES}),
    "tiny-avlm": PresetDims("tiny-avlm", _LANGUAGE, {"images": _IMAGES, "audio": _AUDIO}),
    "tiny-lm": PresetDims("tiny-lm", _LANGUAGE, {}),
    # 8 layers: room for pp4 x vpp2 (interleaved and zero-bubble tests)
    "tiny-lm-8": PresetDims("tiny-lm-8", dataclasses.replace(_LANGUAGE, layers=8), {}),
    "tiny-vlm-8": PresetDims("tiny-vlm-8", dataclasses.replace(_LANGUAGE, layers=8),
                             {"images": dataclasses.replace(_IMAGES, layers=4)}),
    "tiny-llama": PresetDims("tiny-llama", _LLAMA, {}),
    "tiny-llava": PresetDims("tiny-llava", _LLAMA, {"images": _IMAGES}),
    "tiny-qwen2-vlm": PresetDims("tiny-qwen2-vlm", _QWEN2, {"images": _IMAGES}),
    "llava-1.5-7b": PresetDims("llava-1.5-7b", _VICUNA_7B, {"images": _CLIP_L_336}),
    "llava-1.5-13b": PresetDims("llava-1.5-13b", _VICUNA_13B, {"images": _CLIP_L_336}),
    "siglip-qwen2-7b": PresetDims("siglip-qwen2-7b", _QWEN2_7B, {"images": _SIGLIP_SO400M}),
    "llama-3-8b": PresetDims("llama-3-8b", _LLAMA3_8B, {}),
}

# presets with real dimensions: planned and sized, never built by this runtime's presets
REAL_SIZE = frozenset({"llava-1.5-7b", "llava-1.5-13b", "siglip-qwen2-7b", "llama-3-8b"})
