"""A small real multimodal task, nothing downloaded: sklearn's digits images and DTMF tone clips,
captioned with their digits."""

from mimo_runtime.data.dataset import (CaptionDataset, Sample, caption_accuracy, collate_modality, collate_tokens,
                                       image_pool, make_dataset)
from mimo_runtime.data.tokenizer import BOS, EOS, PAD, Tokenizer

__all__ = ["make_dataset", "CaptionDataset", "Sample", "collate_tokens", "collate_modality", "caption_accuracy",
           "image_pool", "Tokenizer", "PAD", "BOS", "EOS"]
