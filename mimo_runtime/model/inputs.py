"""What the model expects from data: special token ids, encoder input names and item geometry.

Kept free of torch/megatron imports so `mimo_runtime.data` can share it without paying for them.
"""

from typing import Dict, Tuple

# Placeholder ids in input_ids, one per modality: each is replaced by that modality's embeddings.
SPECIAL_TOKEN_IDS: Dict[str, int] = {"images": 3, "audio": 4}

# modality -> (encoder key in modality_inputs, input tensor name)
ENCODER_INPUTS: Dict[str, Tuple[str, str]] = {
    "images": ("digits_vit", "pixels"),
    "audio": ("tone_encoder", "features"),
}

# images: (channels, height, width) split into PATCH x PATCH patches, one token each
IMAGE_SHAPE: Tuple[int, int, int] = (1, 8, 8)
PATCH = 4
# audio: log-mel-like features (mels, frames); the conv stem downsamples frames by AUDIO_STRIDE
AUDIO_SHAPE: Tuple[int, int] = (16, 32)
AUDIO_STRIDE = 4


def tokens_per_item(modality: str) -> int:
    """Embeddings one item of `modality` contributes to the language sequence."""
    if modality == "images":
        return (IMAGE_SHAPE[1] // PATCH) * (IMAGE_SHAPE[2] // PATCH)
    if modality == "audio":
        return AUDIO_SHAPE[1] // AUDIO_STRIDE
    raise ValueError(f"unknown modality '{modality}'; known: {sorted(ENCODER_INPUTS)}")
