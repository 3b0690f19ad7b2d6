"""Captioning samples: 0-2 digit images (and 0-1 DTMF clip for tiny-avlm) -> their digits as text.

Sequence layout (fixed length = the preset's seq_length):
    BOS, [images]*16 per image, [audio]*8 per clip, caption chars, EOS, PAD...
The caption lists the image digits, then the clip digits, separated by spaces ("none" if the
sample has no items). labels are next tokens; loss_mask is 1 exactly where the label is a caption
character or EOS, so the prompt and padding carry no loss.

Everything about sample i (item counts, which images, clip randomness) comes from a generator
seeded by (seed, split, i): any process can build any sample, cheaply, in any order.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from mimo_runtime.data.audio import digit_features
from mimo_runtime.data.tokenizer import BOS, EOS, PAD, Tokenizer
from mimo_runtime.model.inputs import AUDIO_SHAPE, ENCODER_INPUTS, IMAGE_SHAPE, tokens_per_item
from mimo_runtime.topology.presets import PRESETS

SPLITS = {"train": 0, "heldout": 1}
DEFAULT_SIZES = {"train": 4096, "heldout": 512}
HELDOUT_FRACTION = 0.2
# P(number of items) per modality, truncated at the preset's max_items
ITEM_PROBS = {"images": (0.15, 0.45, 0.40), "audio": (0.4, 0.6)}


@lru_cache(maxsize=1)
def _digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@lru_cache(maxsize=None)
def image_pool(split: str) -> np.ndarray:
    """Indices of sklearn digits images in `split`; the split is fixed (not seeded) so held-out
    images never appear in training whatever the seed, and accuracies compare across seeds."""
    n = len(_digits()[1])
    order = np.random.default_rng(20240601).permutation(n)
    cut = int(round(n * (1 - HELDOUT_FRACTION)))
    return np.sort(order[:cut] if split == "train" else order[cut:])


@dataclass(frozen=True)
class Sample:
    images: Tuple[int, ...]  # sklearn digits indices
    clips: Tuple[int, ...]  # digits spoken by the DTMF clips


class CaptionDataset:
    """`len`, `tokens(i)`, `modality(i, name)`, `num_items(i, name)` and `caption(i)`."""

    def __init__(self, preset: str, split: str, seed: int, size: int = 0):
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset '{preset}'; known: {sorted(PRESETS)}")
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; known: {sorted(SPLITS)}")
        self.dims = PRESETS[preset]
        self.split, self.seed = split, seed
        self.size = size or DEFAULT_SIZES[split]
        self.seq_length = self.dims.language.seq_length
        self.modalities = list(self.dims.encoders)
        self.tokenizer = Tokenizer()
        if self.tokenizer.vocab_size > self.dims.language.vocab_size:
            raise ValueError(f"preset '{preset}': vocab_size {self.dims.language.vocab_size} < the tokenizer's "
                             f"{self.tokenizer.vocab_size}")
        longest = 2 + sum(tokens_per_item(e.modality) * e.max_items for e in self.dims.encoders.values())
        longest += len(self._caption_text(Sample((0,) * self._max("images"), (0,) * self._max("audio"))))
        if longest > self.seq_length:
            raise ValueError(f"preset '{preset}': the longest sample needs {longest} tokens > "
                             f"seq_length {self.seq_length}")

    def __len__(self) -> int:
        return self.size

    def _max(self, modality: str) -> int:
        enc = self.dims.encoders.get(modality)
        return enc.max_items if enc is not None else 0

    @lru_cache(maxsize=None)
    def sample(self, i: int) -> Sample:
        if not 0 <= i < self.size:
            raise IndexError(f"sample {i} out of range for {self.split} split of size {self.size}")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], i])
        images, clips = (), ()
        if "images" in self.dims.encoders:
            pool = image_pool(self.split)
            images = tuple(int(x) for x in rng.choice(pool, size=self._count(rng, "images")))
        if "audio" in self.dims.encoders:
            clips = tuple(int(x) for x in rng.integers(0, 10, size=self._count(rng, "audio")))
        return Sample(images, clips)

    def _count(self, rng: np.random.Generator, modality: str) -> int:
        probs = np.array(ITEM_PROBS[modality][: self._max(modality) + 1])
        return int(rng.choice(len(probs), p=probs / probs.sum()))

    def num_items(self, i: int, name: str) -> int:
        """Items of modality `name` in sample i (no pixels or audio computed)."""
        if name not in self.modalities:
            raise ValueError(f"unknown modality '{name}'; this dataset has {self.modalities}")
        s = self.sample(i)
        return len(s.images) if name == "images" else len(s.clips)

    def _caption_text(self, s: Sample) -> str:
        labels = _digits()[1]
        words = [str(labels[j]) for j in s.images] + [str(d) for d in s.clips]
        return " ".join(words) if words else "none"

    def caption(self, i: int) -> str:
        return self._caption_text(self.sample(i))

    def tokens(self, i: int) -> Dict[str, torch.Tensor]:
        """1-D tensors of seq_length: input_ids, labels, loss_mask (float), position_ids."""
        special = self.tokenizer.special_token_ids
        ids = [BOS]
        for name in self.modalities:
            ids += [special[name]] * (self.num_items(i, name) * tokens_per_item(name))
        start = len(ids)
        ids += self.tokenizer.encode(self.caption(i)) + [EOS]
        end = len(ids)
        ids += [PAD] * (self.seq_length - end)
        input_ids = torch.tensor(ids, dtype=torch.long)
        labels = torch.cat([input_ids[1:], torch.tensor([PAD])])
        loss_mask = torch.zeros(self.seq_length)
        loss_mask[start - 1:end - 1] = 1.0  # positions whose next token is a caption char or EOS
        return {"input_ids": input_ids, "labels": labels, "loss_mask": loss_mask,
                "position_ids": torch.arange(self.seq_length)}

    def modality(self, i: int, name: str) -> Dict[str, Dict[str, torch.Tensor]]:
        """{encoder key: {input name: (items, ...) tensor}} for sample i; possibly 0 items."""
        key, field = ENCODER_INPUTS[name] if name in self.modalities else (None, None)
        if key is None:
            raise ValueError(f"unknown modality '{name}'; this dataset has {self.modalities}")
        s = self.sample(i)
        if name == "images":
            pixels = _digits()[0][list(s.images)].reshape(len(s.images), *IMAGE_SHAPE)
            return {key: {field: torch.from_numpy(np.ascontiguousarray(pixels))}}
        feats = [digit_features(d, [self.seed, SPLITS[self.split], i, k]) for k, d in enumerate(s.clips)]
        stacked = np.stack(feats) if feats else np.zeros((0, *AUDIO_SHAPE), np.float32)
        return {key: {field: torch.from_numpy(stacked)}}


def make_dataset(preset_name: str, split: str, seed: int, size: int = 0) -> CaptionDataset:
    """The captioning dataset of a model preset ("tiny-vlm", "tiny-avlm", "tiny-lm")."""
    return CaptionDataset(preset_name, split, seed, size)


def collate_tokens(samples: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack 1-D token dicts into (B, S) tensors."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def collate_modality(samples: Sequence[Dict[str, Dict[str, torch.Tensor]]]) -> Dict[str, Dict[str, torch.Tensor]]:
    """Concatenate per-sample modality dicts along dim 0, in sample order."""
    return {key: {field: torch.cat([s[key][field] for s in samples]) for field in samples[0][key]}
            for key in samples[0]}


def caption_accuracy(logits: torch.Tensor, batch: Dict[str, torch.Tensor]) -> float:
    """Fraction of samples whose every caption token (and EOS) is the argmax of full-vocab logits
    (B, S, V) given the true prefix. Exact match under teacher forcing equals exact match of
    greedy decoding: greedy reproduces the caption iff every step's argmax is the true token."""
    labels, mask = batch["labels"], batch["loss_mask"] > 0
    hit = (logits.argmax(-1) == labels) | ~mask
    has_caption = mask.any(-1)
    return float(hit.all(-1)[has_caption].float().mean()) if has_caption.any() else 0.0

