"""Preset registry: model dimensions by name.

Pure data so topology validation can check parallel sizes (tp against heads, pp against layers)
without importing torch. `mimo_runtime/model/presets.py` builds the modules behind these names.
"""

from dataclasses import dataclass, field
from typing import Dict, Mapping


@dataclass(frozen=True)
class EncoderDims:
    modality: str  # "images" or "audio": selects the submodule family
    hidden: int
    heads: int
    layers: int
    tokens_per_item: int  # embeddings one image / clip contributes to the language sequence
    max_items: int  # most items (images, clips) one sample may carry


@dataclass(frozen=True)
class LanguageDims:
    hidden: int
    heads: int
    layers: int
    ffn_hidden: int
    vocab_size: int
    seq_length: int


@dataclass(frozen=True)
class PresetDims:
    name: str
    language: LanguageDims
    encoders: Mapping[str, EncoderDims] = field(default_factory=dict)


_IMAGES = EncoderDims(modality="images", hidden=32, heads=4, layers=2, tokens_per_item=4, max_items=2)
_AUDIO = EncoderDims(modality="audio", hidden=32, heads=4, layers=2, tokens_per_item=8, max_items=1)
_LANGUAGE = LanguageDims(hidden=64, heads=4, layers=4, ffn_hidden=256, vocab_size=64, seq_length=32)

PRESETS: Dict[str, PresetDims] = {
    "tiny-vlm": PresetDims("tiny-vlm", _LANGUAGE, {"images": _IMAGES}),
    "tiny-avlm": PresetDims("tiny-avlm", _LANGUAGE, {"images": _IMAGES, "audio": _AUDIO}),
    "tiny-lm": PresetDims("tiny-lm", _LANGUAGE, {}),
}
